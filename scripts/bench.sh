#!/usr/bin/env bash
# make bench: every measurement of issue 9, then docs/BENCHMARKS.md from the numbers
# (bench/report). Measurements, not tests: a step that fails is recorded and the rest go on.
#   BENCH_SHORT=1      footprint runs 30 s instead of 5 min, fewer alarm events and UPS cycles
#   BENCH_DURATION=2m  footprint duration (overrides BENCH_SHORT)
#   BENCH_QEMU=0       skip the QEMU boot (it builds an image and boots it under TCG)
#   N=500              fleet size
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=$(mktemp -d /tmp/rackwatch-bench-XXXXXX)
echo "bench: outputs in $out"

duration=${BENCH_DURATION:-5m}
events=1000
cycles=10
if [ "${BENCH_SHORT:-}" = 1 ]; then
	duration=${BENCH_DURATION:-30s}
	cycles=5
	echo "**BENCH_SHORT=1**: footprint over $duration (not 5 min), $cycles UPS cycles." >"$out/short"
fi
echo "$duration" >"$out/duration"
storage_duration=${BENCH_STORAGE_DURATION:-1h}
[ "${BENCH_SHORT:-}" = 1 ] && storage_duration=${BENCH_STORAGE_DURATION:-3m}
echo "$storage_duration" >"$out/storage_duration"
export BENCH_STORAGE_DURATION=$storage_duration
echo "${N:-500}" >"$out/fleet_n"

{
	echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit:   $(git describe --always --dirty 2>/dev/null)"
	echo "nproc:    $(nproc)"
	echo "cpu:      $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "memory:   $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "kernel:   $(uname -sr)"
	echo "go:       $($GO version)"
	echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run; the machine is shared)"
} >"$out/machine"
cat "$out/machine"

step() { # step NAME CMD...: runs CMD, output to $out/NAME.txt and the terminal
	local name=$1
	shift
	echo "== $name: $*"
	"$@" 2>&1 | tee "$out/$name.txt"
	local rc=${PIPESTATUS[0]}
	[ "$rc" = 0 ] || echo "(exit status $rc)" | tee -a "$out/$name.txt"
}

# Storage (bench/storage) runs for BENCH_STORAGE_DURATION (1h; 3m with BENCH_SHORT) beside the
# rest: four daemons, one per site kind, at once. They are quiet sites; the CPU and latency
# figures below are measured with them running.
$GO build -trimpath -ldflags '-s -w' -o "$out/rackwatch-storage" ./daemon
storage_pids=()
for kind in Quiet Demo Offline Idle; do
	RACKWATCH_BIN="$out/rackwatch-storage" $GO test -run '^$' -bench "^BenchmarkStorage$kind\$" -benchtime=1x -timeout 3h \
		./bench/storage/ >"$out/storage-$kind.log" 2>&1 &
	storage_pids+=($!)
done

step rules $GO test -run '^$' -bench . -benchmem ./daemon/rules/
step state bash -c "$GO test -run '^\$' -bench RingAdd -benchmem ./daemon/state/ &&
	$GO test -run '^\$' -bench History24h -benchmem -benchtime=1x ./daemon/state/"
# Both run whatever the other did: a failure of one must not leave the other unmeasured.
step uplink bash -c "$GO test -run '^\$' -bench DiskBytesPerReading -benchtime=1x -timeout 30m ./uplink/; a=\$?
	$GO test -run '^\$' -bench DrainVsPaho -benchtime=4x -timeout 30m ./uplink/; b=\$?
	exit \$((a > b ? a : b))"
step alarm env BENCH_ALARM_EVENTS=$events $GO test -run '^$' -bench AlarmLatency -benchtime=1x -timeout 30m ./daemon/site/
step ups env BENCH_UPS_CYCLES=$cycles $GO test -run '^$' -bench UPSLatency -benchtime=1x -timeout 30m ./bench/upslatency/

make build >/dev/null
step footprint env RACKWATCH_BIN="$PWD/bin/rackwatch" BENCH_DURATION="$duration" \
	$GO test -run '^$' -bench Footprint -benchtime=1x -timeout 60m ./bench/footprint/

# Side by side with Telegraf 1.37 on Telegraf's own job (one UPS-MIB agent polled every second,
# published every second to mosquitto), the shared tool; its ratio line becomes key=value lines.
sbs=${SIDE_BY_SIDE:-../shared/tools/side-by-side-telegraf.sh}
sbs_dur=${BENCH_SBS_DUR:-120}
sbs_rounds=${BENCH_SBS_ROUNDS:-3}
[ "${BENCH_SHORT:-}" = 1 ] && sbs_dur=${BENCH_SBS_DUR:-45} && sbs_rounds=${BENCH_SBS_ROUNDS:-2}
echo "DUR=$sbs_dur ROUNDS=$sbs_rounds" >"$out/sbs_args"
if [ -f "$sbs" ]; then
	# rackwatch runs as its systemd unit and the image run it: RUNTIME_DIRECTORY on a tmpfs (the
	# uplink's hold file). Telegraf ignores the variable.
	sbs_rt=$(mktemp -d /dev/shm/rackwatch-sbs.XXXXXX)
	step side-by-side env RUNTIME_DIRECTORY="$sbs_rt" RACKWATCH_BIN="$PWD/bin/rackwatch" DUR="$sbs_dur" ROUNDS="$sbs_rounds" bash "$sbs"
	rm -rf "$sbs_rt"
	# "ratio rackwatch/telegraf: peak RSS 0.55, anonymous RSS 0.70, CPU 0.45"
	sed -nE 's/^ratio rackwatch\/telegraf: peak RSS ([0-9.]+), anonymous RSS ([0-9.]+), CPU ([0-9.]+).*/rss_ratio=\1\nanon_ratio=\2\ncpu_ratio=\3/p' \
		"$out/side-by-side.txt" >>"$out/side-by-side.txt"
	# "telegraf: peak RSS 25.3 MB, anonymous RSS 6.9 MB, CPU 0.27 s, written 12 KiB in 60 s"
	sed -nE 's/^(rackwatch|telegraf): peak RSS ([0-9.]+) MB, anonymous RSS ([0-9.]+) MB, CPU ([0-9.]+) s.*/\1_rss_mb=\2\n\1_anon_mb=\3\n\1_cpu_s=\4/p' \
		"$out/side-by-side.txt" >>"$out/side-by-side.txt"
else
	echo "side-by-side not run: $sbs not found" | tee "$out/side-by-side.txt"
fi

make cross >/dev/null
{
	for a in arm64 armv7; do
		f=bin/rackwatch-linux-$a
		s=$(stat -c %s "$f")
		echo "$f: $s bytes ($(file -b "$f" 2>/dev/null | cut -d, -f1-2))"
		awk -v a=$a -v s="$s" 'BEGIN { printf "%s_mb=%.3f\n", a, s/1048576 }'
	done
} | tee "$out/binary.txt"

if [ "${BENCH_QEMU:-1}" != 0 ]; then
	echo "== qemu: go test -run '^TestBoot\$' -v ./images/mkimage/"
	$GO test -run '^TestBoot$' -v -count=1 -timeout 20m ./images/mkimage/ >"$out/qemu.log" 2>&1
	rc=$?
	{
		grep -E 'status page answered|--- (PASS|FAIL|SKIP)' "$out/qemu.log"
		# "status page answered 7.3s after QEMU started" → boot_s=7.3
		grep -oE 'status page answered [0-9.]+(ms|s|m[0-9.]+s)' "$out/qemu.log" | head -1 |
			awk '{ d=$4; if (d ~ /ms$/) { sub(/ms$/,"",d); d/=1000 } else if (d ~ /m/) { split(d,p,"m"); sub(/s$/,"",p[2]); d=p[1]*60+p[2] } else { sub(/s$/,"",d) } printf "boot_s=%.2f\n", d }'
		[ "$rc" = 0 ] || echo "(TestBoot exit status $rc; see $out/qemu.log)"
	} | tee "$out/qemu.txt"
else
	echo "QEMU boot not run (BENCH_QEMU=0)" >"$out/qemu.txt"
fi

step fleet $GO run ./bench/fleet -n "${N:-500}"

# Every fuzz target for FUZZTIME (1m; 10s with BENCH_SHORT): a line per target and the summary go
# in the report.
fuzztime=${FUZZTIME:-1m}
[ "${BENCH_SHORT:-}" = 1 ] && fuzztime=${FUZZTIME:-10s}
echo "$fuzztime" >"$out/fuzztime"
FUZZTIME=$fuzztime bash scripts/fuzz.sh >"$out/fuzz.log" 2>&1
grep -E '^fuzz: ' "$out/fuzz.log" | grep -v '^fuzz: elapsed' | tee "$out/fuzz.txt"
# "fuzz: 29 targets, 1m each, 2 with crashers, 1756s" → key=value lines for the report.
sed -nE 's/^fuzz: ([0-9]+) targets, .*, ([0-9]+) with crashers, .*/fuzz_targets=\1\nfuzz_crashers=\2/p' "$out/fuzz.txt" >>"$out/fuzz.txt"

echo "== storage: waiting for the three storage runs (started at the beginning)"
for p in "${storage_pids[@]}"; do wait "$p"; done
cat "$out"/storage-*.log | tee "$out/storage.txt"

mkdir -p docs
$GO run ./bench/report -in "$out" -out docs/BENCHMARKS.md && echo "bench: wrote docs/BENCHMARKS.md"
