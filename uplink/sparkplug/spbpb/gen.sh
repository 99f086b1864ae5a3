#!/bin/sh
# Regenerates sparkplug_b.pb.go from third_party/tahu/sparkplug_b.proto into $1 (default: here).
# Needs protoc (Debian protobuf-compiler); protoc-gen-go is built from the module cache at the
# version go.mod names, so the output depends only on the two inputs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
(cd "$root" && go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go)
PATH="$bin:$PATH" protoc --proto_path="$root/third_party/tahu" \
	--go_out="$out" --go_opt=paths=source_relative \
	--go_opt=Msparkplug_b.proto=github.com/rackwatch/rackwatch/uplink/sparkplug/spbpb \
	sparkplug_b.proto
