//go:build tools

// Package etcd35 pins etcd 3.5 and etcd's benchmark tool, which
// bench/server.sh builds to measure a cairn member beside an etcd member.
// A module of its own: neither is a dependency of cairn or of bench/.
package etcd35

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "go.etcd.io/etcd/v3/tools/benchmark"
)
