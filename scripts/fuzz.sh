#!/usr/bin/env bash
# make fuzz: runs every fuzz target of the module for FUZZTIME each (default 1m), one after the
# other, with a line per target (`fuzz: target PKG NAME: N execs, ok|crasher|failed`), and
# ends with one summary line. A crasher is written by go test under the package's
# testdata/fuzz/<Target>/, where it becomes a regression seed that every `make test` runs once
# it is committed; the run exits non-zero when any target found one.
#   FUZZTIME=10s make fuzz     a quick pass
#   FUZZ='Timeline|Hold'       only the targets whose name matches
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
fuzztime=${FUZZTIME:-1m}
pattern=${FUZZ:-.}
targets=0
failed=()
start=$(date +%s)
while IFS=: read -r file _ line; do
	name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"$line")
	grep -Eq "$pattern" <<<"$name" || continue
	pkg=./$(dirname "$file")
	targets=$((targets + 1))
	echo "== $pkg $name ($fuzztime)"
	log=$(mktemp)
	# A worker minimizes each new interesting input before it counts again, for up to a minute
	# by default: with a target that writes a database per input, two workers minimizing took
	# most of a one-minute run. 10 s still shrinks a crasher well.
	if $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 10s "$pkg" >"$log" 2>&1; then
		result=ok
	else
		result=failed # did not build, or failed before fuzzing
		grep -q 'Failing input written to' "$log" && result=crasher
		failed+=("$pkg.$name")
	fi
	tail -n 20 "$log"
	# The inputs run: the last progress line's count (0 when it never got that far).
	execs=$(sed -nE 's/^fuzz: elapsed: .*, execs: ([0-9]+) .*/\1/p' "$log" | tail -n 1)
	echo "fuzz: target $pkg $name: ${execs:-0} execs, $result"
	rm -f "$log"
done < <(git grep -n -E '^func Fuzz[A-Za-z0-9_]*\(' -- '*_test.go' | sort)
elapsed=$(($(date +%s) - start))
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz: crashers in %s\n' "$(printf '%s\n' "${failed[@]}" | sort -u | tr '\n' ' ')"
fi
n_failed=$(printf '%s\n' "${failed[@]}" | sort -u | grep -c . || true)
echo "fuzz: $targets targets, ${fuzztime} each, $n_failed with crashers, ${elapsed}s"
[ "$n_failed" = 0 ]
