#!/usr/bin/env bash
# record.sh NAME: puts bench/report/recorded/NAME.md into docs/BENCHMARKS.md between the
# markers <!-- recorded:NAME --> and <!-- /recorded:NAME --> (appended the first time).
# make bench rewrites the file from its own run and appends every recorded/*.md the same way
# (bench/report), so a result recorded by make interop or make fleet-nats survives it.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
src=bench/report/recorded/$name.md
doc=docs/BENCHMARKS.md
python3 - "$name" "$src" "$doc" <<'P'
import sys, re
name, src, doc = sys.argv[1:]
body = open(src).read().strip()
block = f"<!-- recorded:{name} -->\n{body}\n<!-- /recorded:{name} -->"
text = open(doc).read()
pat = re.compile(rf"<!-- recorded:{re.escape(name)} -->.*?<!-- /recorded:{re.escape(name)} -->", re.S)
text = pat.sub(lambda m: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
open(doc, "w").write(text)
P
echo "record: $src → $doc"
