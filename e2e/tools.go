//go:build tools

// Package e2e drives the cairn binary with etcd's own etcdctl (v3.5),
// and cairnctl's migration with etcd's etcdutl, built from this module's
// requirements; it is a module of its own so that cairn itself does not
// depend on them.
package e2e

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
)
