#!/bin/sh
# Regenerates server/v3lockpb and server/v3electionpb from the protos
# here: messages, gRPC services, and the JSON gateway's routes (from
# gateway.yaml). Needs protoc (Debian: apt-get install protobuf-compiler);
# installs the Go generators, pinned, into a temporary directory. The generated code
# is committed: building cairn needs none of this.
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
GOBIN=$bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GOBIN=$bin go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.29.0
PATH=$bin:$PATH protoc -I . -I etcdstub \
	--go_out=.. --go_opt=module=github.com/cairn-kv/cairn/server \
	--go-grpc_out=.. --go-grpc_opt=module=github.com/cairn-kv/cairn/server \
	--grpc-gateway_out=.. --grpc-gateway_opt=module=github.com/cairn-kv/cairn/server \
	--grpc-gateway_opt=grpc_api_configuration=gateway.yaml --grpc-gateway_opt=standalone=false \
	v3lock.proto v3election.proto
