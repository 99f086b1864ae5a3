#!/usr/bin/env bash
# make interop: the Telegraf kit (contrib/telegraf) against a real Telegraf 1.37 and the
# daemon's demo site on a real mosquitto, with a broker restart and a daemon crash mid-run
# (contrib/telegraf/interop_test.go). Not part of make test. Telegraf is built once (a custom
# build with only the plugins the kit and the test use, a few minutes) into
# ${XDG_CACHE_HOME:-~/.cache}/rackwatch-anchors/telegraf-interop, beside the side-by-side
# script's own build. The result goes to bench/report/recorded/interop.md and into
# docs/BENCHMARKS.md (scripts/record.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
TGV=1.37.2
cache=${XDG_CACHE_HOME:-$HOME/.cache}/rackwatch-anchors
TG=$cache/telegraf-interop
if [ ! -x "$TG" ] || ! "$TG" --version | grep -q "$TGV"; then
	mkdir -p "$cache"
	tmp=$(mktemp -d)
	echo "interop: building Telegraf $TGV into $TG (once)"
	GOBIN=$tmp $GO install -ldflags "-X github.com/influxdata/telegraf/internal.Version=$TGV" \
		-tags "custom,inputs.mqtt_consumer,processors.starlark,parsers.value,outputs.file,serializers.influx" \
		github.com/influxdata/telegraf/cmd/telegraf@v$TGV
	mv "$tmp/telegraf" "$TG"
	rmdir "$tmp"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
TELEGRAF_BIN=$TG $GO test -tags interop -run '^TestInterop$' -count=1 -v -timeout 15m ./contrib/telegraf/ 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
verdict=passed
[ "$rc" = 0 ] || verdict="FAILED (exit status $rc)"
{
	echo "## Interop: the Telegraf kit"
	echo
	echo "\`make interop\` at $(bash scripts/commitref.sh), $(date -u +%Y-%m-%dT%H:%MZ), $verdict."
	echo
	echo "contrib/telegraf/rackwatch.conf in Telegraf $("$TG" --version | sed 's/^Telegraf //'), the daemon (built by the test) running"
	echo "the demo site (daemon/demo.yaml, telemetry every 2 s, no NUT listener) on mosquitto; mid-run mosquitto restarts and the daemon"
	echo "is SIGKILLed and started again, so delivered messages go again (at least once). A second"
	echo "subscriber records the wire; every seq on the wire must be in Telegraf's line protocol"
	echo "output, and no point twice (same series, timestamp and seq)."
	echo
	echo '```'
	grep -E '^(interop: |telegraf_version=|points=|series=|wire_|out_|duplicate_points=|dedup_dropped=|--- )' "$out" | sed 's/^ *//'
	echo '```'
} >bench/report/recorded/interop.md.new
mv bench/report/recorded/interop.md.new bench/report/recorded/interop.md
bash scripts/record.sh interop
exit "$rc"
