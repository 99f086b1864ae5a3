#!/usr/bin/env bash
# commitref.sh: the commit a recorded result was measured at, "-dirty" when files other than
# the records themselves (docs/BENCHMARKS.md, bench/report/recorded/) had uncommitted changes.
cd "$(dirname "$0")/.."
ref=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- . ':!docs/BENCHMARKS.md' ':!bench/report/recorded' 2>/dev/null)" ]; then
	ref=$ref-dirty
fi
echo "$ref"
