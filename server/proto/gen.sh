#!/bin/sh
# Regenerates server/v3lockpb and server/v3electionpb from the protos
# here. Needs protoc (Debian: apt-get install protobuf-compiler); installs
# the Go generators, pinned, into a temporary directory. The generated code
# is committed: building cairn needs none of this.
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
GOBIN=$bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PATH=$bin:$PATH protoc -I . -I etcdstub \
	--go_out=.. --go_opt=module=github.com/cairn-kv/cairn/server \
	--go-grpc_out=.. --go-grpc_opt=module=github.com/cairn-kv/cairn/server \
	v3lock.proto v3election.proto
