#!/usr/bin/env bash
# make bench: measurements, not tests. Writes docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchmem ./daemon/rules/ ./daemon/state/ | tee /tmp/rackwatch-bench.txt
