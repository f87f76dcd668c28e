//go:build tools

// Package e2e drives the cairn binary with etcd's own etcdctl (v3.5),
// built from this module's requirements; it is a module of its own so
// that cairn itself does not depend on etcdctl.
package e2e

import _ "go.etcd.io/etcd/etcdctl/v3"
