// Command report turns the outputs `scripts/bench.sh` collects in one folder into
// docs/BENCHMARKS.md: per measurement the command, the numbers, the target and whether it is
// met. It parses `go test -bench` lines (name, then value-unit pairs) and the `key=value`
// lines the script writes for what is not a Go benchmark (binary size, QEMU boot, fleet).
// It imports nothing of rackwatch.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// results: file → benchmark name (without -GOMAXPROCS) → unit → value. Key=value lines are
// stored under the benchmark name "".
type results map[string]map[string]map[string]float64

// outputs is what load found: the numbers, and why some are missing.
type outputs struct {
	r      results
	order  map[string][]string          // file → benchmark names in the order they came
	failed map[string]map[string]string // file → benchmark → what its --- FAIL or --- SKIP said
	status map[string]string            // file → how its step ended, when not well (exit status, panic, timeout)
}

var (
	benchLine  = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)
	failLine   = regexp.MustCompile(`^\s*--- (FAIL|SKIP): (Benchmark\S+)`)
	statusLine = regexp.MustCompile(`^(\(exit status \d+\)|\(\S+ exit status \d+.*\)|panic: .*|\*\*\* Test killed.*|signal: .*)$`)
)

func load(dir string) (*outputs, error) {
	out := &outputs{r: results{}, order: map[string][]string{}, failed: map[string]map[string]string{}, status: map[string]string{}}
	r := out.r
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		m := map[string]map[string]float64{"": {}}
		r[name] = m
		out.failed[name] = map[string]string{}
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		failing := "" // the benchmark whose --- FAIL/SKIP message is being read
		for sc.Scan() {
			line := sc.Text()
			if failing != "" {
				// The first indented line under --- FAIL is the benchmark's own message.
				if t := strings.TrimSpace(line); t != "" && strings.HasPrefix(line, " ") && out.failed[name][failing] == "" {
					out.failed[name][failing] = t
					failing = ""
					continue
				}
				failing = ""
			}
			if g := failLine.FindStringSubmatch(line); g != nil {
				b := strings.TrimSuffix(g[2], " ")
				out.failed[name][b] = ""
				if g[1] == "SKIP" {
					out.failed[name][b] = "skipped"
				}
				failing = b
				continue
			}
			if statusLine.MatchString(line) && out.status[name] == "" {
				out.status[name] = line
			}
			if g := benchLine.FindStringSubmatch(line); g != nil {
				units := map[string]float64{}
				f := strings.Fields(g[3])
				for i := 0; i+1 < len(f); i += 2 {
					if v, err := strconv.ParseFloat(f[i], 64); err == nil {
						units[f[i+1]] = v
					}
				}
				if _, seen := m[g[1]]; !seen {
					out.order[name] = append(out.order[name], g[1])
				}
				m[g[1]] = units
				continue
			}
			if k, v, ok := strings.Cut(line, "="); ok && !strings.ContainsAny(k, " \t") {
				if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					m[""][k] = x
				}
			}
		}
		fh.Close()
	}
	return out, nil
}

// whyMissing says why file has no unit for bench: the benchmark's own failure if it (or the
// benchmark it is part of) failed, else how the step ended.
func (o *outputs) whyMissing(file, bench, unit string) string {
	if _, ok := o.r[file]; !ok {
		return "not run: no " + file + ".txt in the run's outputs"
	}
	for b := bench; b != ""; {
		if msg, ok := o.failed[file][b]; ok && (msg != "" || b == bench) {
			if msg == "" {
				msg = "no message"
			}
			if msg == "skipped" {
				return b + " skipped"
			}
			return b + " failed: " + msg
		}
		i := strings.LastIndex(b, "/")
		if i < 0 {
			break
		}
		b = b[:i]
	}
	what := bench
	if bench == "" {
		what = unit + "="
	} else if _, ok := o.r[file][bench]; ok {
		what = bench + " without " + unit
	}
	if st := o.status[file]; st != "" {
		return "no " + what + " in " + file + ".txt; the step ended with " + strings.Trim(st, "()")
	}
	return "no " + what + " in " + file + ".txt"
}

func (o *outputs) get(file, bench, unit string) (float64, bool) {
	v, ok := o.r[file][bench][unit]
	return v, ok
}

// check is one number with its target.
type check struct {
	what        string
	file, bench string
	unit        string
	atMost      bool // the target is an upper bound (else a lower bound)
	target      float64
	format      string
}

func (c check) row(r *outputs) string { return c.rowAs(r, c.what) }

func (c check) rowAs(r *outputs, what string) string {
	c.what = what
	v, ok := r.get(c.file, c.bench, c.unit)
	if !ok {
		return fmt.Sprintf("| %s | not measured | %s | %s |", c.what, c.bound(), cell(r.whyMissing(c.file, c.bench, c.unit)))
	}
	if c.target == 0 && !c.atMost {
		return fmt.Sprintf("| %s | "+c.format+" | none | no target (shown for comparison) |", c.what, v)
	}
	met := v >= c.target
	if c.atMost {
		met = v <= c.target
	}
	verdict := "met"
	if !met {
		if c.atMost {
			verdict = fmt.Sprintf("**missed** by "+c.format, v-c.target)
			if c.target != 0 {
				verdict += fmt.Sprintf(" (%.0f %% over)", 100*(v-c.target)/c.target)
			}
		} else {
			verdict = fmt.Sprintf("**missed** by "+c.format+" (%.0f %% under)", c.target-v, 100*(c.target-v)/c.target)
		}
	}
	return fmt.Sprintf("| %s | "+c.format+" | %s | %s |", c.what, v, c.bound(), verdict)
}

func (c check) bound() string {
	if c.target == 0 && !c.atMost {
		return "none"
	}
	op := "≥"
	if c.atMost {
		op = "≤"
	}
	return op + " " + strconv.FormatFloat(c.target, 'f', -1, 64)
}

// cell makes text safe inside a Markdown table cell.
func cell(t string) string { return strings.ReplaceAll(t, "|", "\\|") }

// unchecked returns a row for each benchmark in files that no check names: a configuration
// that was measured is shown with its figures even when nobody gave it a target.
func (o *outputs) unchecked(files []string, checks []check) []string {
	named := map[string]bool{}
	for _, c := range checks {
		named[c.file+"\x00"+c.bench] = true
	}
	var rows []string
	for _, f := range files {
		f = strings.TrimSuffix(f, ".txt")
		for _, b := range o.order[f] {
			if named[f+"\x00"+b] {
				continue
			}
			var units []string
			for u := range o.r[f][b] {
				units = append(units, u)
			}
			sort.Strings(units)
			vals := make([]string, len(units))
			for i, u := range units {
				vals[i] = strconv.FormatFloat(o.r[f][b][u], 'f', -1, 64) + " " + u
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | none | no target in bench/report (shown as measured) |", cell(b), cell(strings.Join(vals, ", "))))
		}
	}
	return rows
}

// section is one of the measurements.
type section struct {
	title, command, notes string
	checks                []check
	rows                  func() []string // rows of its own after the checks
	raw                   []string        // files whose text goes in verbatim
}

// fuzzTarget is a line of scripts/fuzz.sh: "fuzz: target ./daemon/audit FuzzVerify: 15445 execs, ok".
var fuzzTarget = regexp.MustCompile(`^fuzz: target (\S+) (\S+): (\d+) execs, (\w+)$`)

// fuzzRows gives each fuzz target its row: a crasher or a target that did not run is missed.
func fuzzRows(text string) []string {
	var rows []string
	for _, line := range strings.Split(text, "\n") {
		g := fuzzTarget.FindStringSubmatch(strings.TrimSpace(line))
		if g == nil {
			continue
		}
		verdict := "met"
		switch g[4] {
		case "ok":
		case "crasher":
			verdict = "**missed**: crasher written to " + strings.TrimPrefix(g[1], "./") + "/testdata/fuzz/" + g[2]
		default:
			verdict = "**missed**: " + g[4] + " (fuzz.log has the output)"
		}
		rows = append(rows, fmt.Sprintf("| %s (%s) | %s inputs | no crasher | %s |", g[2], strings.TrimPrefix(g[1], "./"), g[3], cell(verdict)))
	}
	return rows
}

func main() {
	dir := flag.String("in", "", "folder with the collected outputs")
	out := flag.String("out", "docs/BENCHMARKS.md", "file to write")
	notes := flag.String("notes", "bench/report/notes", "folder of hand-written notes per section (N.md)")
	recordedDir := flag.String("recorded", "bench/report/recorded", "folder of results recorded by other runs (NAME.md), appended as they are")
	flag.Parse()
	r, err := load(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	text := func(name string) string {
		b, err := os.ReadFile(filepath.Join(*dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	secs := []section{
		{title: "1. Rule evaluation", command: "go test -run '^$' -bench . -benchmem ./daemon/rules/",
			notes: "One op is one reading through `rules.Engine.Eval` with 1,000 rules. *Steady*: 1,000 devices, no level changes (the hot path). *Flapping*: every reading flips a rule and makes a Change. *1000Rules*: the lead's original benchmark (676 distinct devices, so most readings flip a level). readings/s is on one core (Eval is single-threaded).",
			checks: []check{
				{"steady: readings/s", "rules", "BenchmarkEvalSteady", "readings/s", false, 2e6, "%.0f"},
				{"steady: allocs/reading", "rules", "BenchmarkEvalSteady", "allocs/op", true, 0, "%.0f"},
				{"flapping: readings/s", "rules", "BenchmarkEvalFlapping", "readings/s", false, 2e6, "%.0f"},
				{"flapping: allocs/reading", "rules", "BenchmarkEvalFlapping", "allocs/op", true, 0, "%.0f"},
				{"original 1000Rules: ns/reading", "rules", "BenchmarkEval1000Rules", "ns/op", true, 500, "%.1f"},
				{"original 1000Rules: allocs/reading", "rules", "BenchmarkEval1000Rules", "allocs/op", true, 0, "%.0f"},
			}, raw: []string{"rules.txt"}},
		{title: "2. Alarm latency", command: "BENCH_ALARM_EVENTS=1000 go test -run '^$' -bench AlarmLatency -benchtime=1x ./daemon/site/",
			notes: "A real `contact` device on a gpiotest pin (put into the site's device Pool, no hook needed), a real mosquitto, an in-process paho subscriber on R/incidents. From the edge handed to the contact's Watch to the incident in the subscriber's hands, minus the 1 ms debounce; 1,000 edges alternating opened/resolved. The path holds one fsync: the incident and its uplink message are one bbolt transaction.",
			checks: []check{
				{"p50 (ms)", "alarm", "BenchmarkAlarmLatency", "p50-ms", true, 15, "%.2f"},
				{"p99 (ms)", "alarm", "BenchmarkAlarmLatency", "p99-ms", true, 15, "%.2f"},
				{"max (ms)", "alarm", "BenchmarkAlarmLatency", "max-ms", false, 0, "%.2f"},
			}, raw: []string{"alarm.txt"}},
		{title: "3. UPS latency", command: "go test -run '^$' -bench UPSLatency -benchtime=1x ./bench/upslatency/",
			notes: "The Go Megatec emulator on two ptys of one UPS: rackwatch's `megatec` device (poll 1s) behind its NUT server, and NUT's own `nutdrv_qx` (pollinterval 1, pollfreq 1) behind `upsd`. Each transition OL → OB LB → OL is timed until `upsc UPS ups.status` shows it, one goroutine per server running upsc back to back. ratio = rackwatch mean / NUT mean.",
			checks: []check{
				{"rackwatch mean (ms)", "ups", "BenchmarkUPSLatency", "rackwatch-mean-ms", false, 0, "%.0f"},
				{"rackwatch max (ms)", "ups", "BenchmarkUPSLatency", "rackwatch-max-ms", false, 0, "%.0f"},
				{"NUT mean (ms)", "ups", "BenchmarkUPSLatency", "nut-mean-ms", false, 0, "%.0f"},
				{"NUT max (ms)", "ups", "BenchmarkUPSLatency", "nut-max-ms", false, 0, "%.0f"},
				{"ratio rackwatch/NUT", "ups", "BenchmarkUPSLatency", "ratio", true, 1.0, "%.2f"},
			}, raw: []string{"ups.txt"}},
		{title: "4. Footprint", command: "RACKWATCH_BIN=bin/rackwatch BENCH_DURATION=" + text("duration") + " go test -run '^$' -bench Footprint -benchtime=1x -timeout 60m ./bench/footprint/",
			notes: "`bin/rackwatch` (`make build`: -trimpath, -s -w) as a child process; peak RSS is /proc/PID/status VmHWM, CPU is utime+stime from /proc/PID/stat, over " + text("duration") + " from the moment it listens. (a) the demo site (`rackwatch`, RACKWATCH_DEMO_DIR in a temp dir); (b) one `upsmib` device on snmpsim (a Riello NetMan 204 walk) polled every 1 s, telemetry every 10 s to mosquitto; (c) 1,000 `sim.env` devices (temperature and humidity) polled every 1 s, a threshold rule on each, telemetry every 10 s to mosquitto; (c') the same with 500 devices (1,000 metrics); (d) (c') after a day: every history ring starts with 24 h of points in place (RACKWATCH_BENCH_PREFILL_HISTORY=24h, a benchmark-only variable of daemon/state: one point a minute for the day before each metric's first reading), so the run measures a site with a full day of history rather than one that started five minutes ago. GOGC and GOMEMLIMIT unset: the daemon's own soft memory limit applies (README, *Memory limit*).",
			checks: []check{
				{"(a) demo: peak RSS (MB)", "footprint", "BenchmarkFootprintDemo", "peakRSS-MB", true, 25, "%.1f"},
				{"(a) demo: CPU (% of one core)", "footprint", "BenchmarkFootprintDemo", "cpu-%core", false, 0, "%.2f"},
				{"(b) upsmib: peak RSS (MB)", "footprint", "BenchmarkFootprintUPSMIB", "peakRSS-MB", false, 0, "%.1f"},
				{"(b) upsmib: CPU (% of one core)", "footprint", "BenchmarkFootprintUPSMIB", "cpu-%core", false, 0, "%.2f"},
				{"(c) 1,000 sim: peak RSS (MB)", "footprint", "BenchmarkFootprint1000Sim", "peakRSS-MB", true, 60, "%.1f"},
				{"(c) 1,000 sim: CPU (% of one core)", "footprint", "BenchmarkFootprint1000Sim", "cpu-%core", true, 5, "%.2f"},
				{"(c') 1,000 metrics (500 sim.env): peak RSS (MB)", "footprint", "BenchmarkFootprint1000Metrics", "peakRSS-MB", true, 60, "%.1f"},
				{"(c') 1,000 metrics (500 sim.env): CPU (% of one core)", "footprint", "BenchmarkFootprint1000Metrics", "cpu-%core", true, 5, "%.2f"},
				{"(d) 1,000 metrics with 24 h of history in place: peak RSS (MB)", "footprint", "BenchmarkFootprint1000Metrics24h", "peakRSS-MB", true, 60, "%.1f"},
				{"(d) 1,000 metrics with 24 h of history in place: CPU (% of one core)", "footprint", "BenchmarkFootprint1000Metrics24h", "cpu-%core", true, 5, "%.2f"},
			}, raw: []string{"footprint.txt"}},
		{title: "5. History memory", command: "go test -run '^$' -bench RingAdd -benchmem ./daemon/state/; go test -run '^$' -bench History24h -benchmem -benchtime=1x ./daemon/state/",
			notes: "24 h of 1,000 metrics (100 devices × 10) at 10 s pushed through `state.Store.Update`: 8,640,000 points. heapB/point is the live heap after GC divided by the points given; ringB/point is what the rings themselves hold (one slot a minute, allocated as the history fills, plus the newest minute's raw points, at most 64). Per stored slot (a minute's mean, 1,440 a metric a day, whatever the poll rate) the same memory is divided by the slots held; the slot target is the point target at this benchmark's six points a slot (4 B × 6).",
			checks: []check{
				{"heap bytes per point", "state", "BenchmarkHistory24h1000Metrics", "heapB/point", true, 4, "%.2f"},
				{"ring bytes per point", "state", "BenchmarkHistory24h1000Metrics", "ringB/point", true, 4, "%.2f"},
				{"heap bytes per stored slot", "state", "BenchmarkHistory24h1000Metrics", "heapB/slot", true, 24, "%.2f"},
				{"ring bytes per stored slot", "state", "BenchmarkHistory24h1000Metrics", "ringB/slot", true, 24, "%.2f"},
				{"stored slots (24 h × 1,000 metrics)", "state", "BenchmarkHistory24h1000Metrics", "slots", false, 0, "%.0f"},
				{"heap for 24 h × 1,000 metrics (MB)", "state", "BenchmarkHistory24h1000Metrics", "heapMB", true, 40, "%.1f"},
			}, raw: []string{"state.txt"}},
		{title: "6. Uplink", command: "go test -run '^$' -bench DiskBytesPerReading -benchtime=1x ./uplink/; go test -run '^$' -bench DrainVsPaho -benchtime=4x ./uplink/",
			notes: "The uplink's own benchmarks (owned by the uplink): BenchmarkDrainVsPaho alternates the backlog drain (10,000 messages of 10 readings queued offline, then Run to a real mosquitto until the last PUBACK) and a plain paho QoS 1 loop with the same 256 in flight on the same broker, four rounds, swapping which goes first each round. BenchmarkDiskBytesPerReading is /proc/self/io write_bytes per reading: what the process caused to be sent to storage, counted per page (or large folio) dirtied, so a write to tmpfs counts nothing and a 4 KiB bbolt page write counts at least 4 KiB; wchar (bytes handed to write(2), tmpfs included) is shown for comparison. Default = mqtt.queue_flush 5m (held telemetry, hold file in tmpfs as under systemd and on the image): with a broker connected messages are acknowledged and never committed, only the seq reservations (a commit per 1,024 messages) reach the disk; with no broker the period's messages (30 at 10 s telemetry) are committed together. The other rows are queue_flush 1m and queue_flush 0 (every message committed before it is published); held-broker is the default against a real mosquitto (testpeer), Run publishing and the PUBACKs removing the messages, where the other held rows play the acknowledgements by hand; …-disk rows put the hold file next to the database (a service without $RUNTIME_DIRECTORY), where its writes reach the disk. Every storage row is held to the same 64 B/reading budget; the wchar rows have none.",
			checks: []check{
				{"drain (msgs/s)", "uplink", "BenchmarkDrainVsPaho", "drain-msgs/s", false, 0, "%.0f"},
				{"plain paho (msgs/s)", "uplink", "BenchmarkDrainVsPaho", "paho-msgs/s", false, 0, "%.0f"},
				{"drain / paho", "uplink", "BenchmarkDrainVsPaho", "drain/paho", false, 0.8, "%.2f"},
				{"disk bytes/reading, default (held, broker connected), 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-acked/readings=30", "B/reading", true, 64, "%.1f"},
				{"disk bytes/reading, default (held, broker connected), 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-acked/readings=100", "B/reading", true, 64, "%.2f"},
				{"disk bytes/reading, default (held, broker connected), 1000 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-acked/readings=1000", "B/reading", true, 64, "%.2f"},
				{"disk bytes/reading, default (held, no broker: 30 msgs/commit), 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-5m/readings=30", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, default (held, no broker: 30 msgs/commit), 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-5m/readings=100", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, queue_flush 1m, no broker (6 msgs/commit), 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-1m/readings=30", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, queue_flush 1m, no broker (6 msgs/commit), 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-1m/readings=100", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, queue_flush 1m, no broker (6 msgs/commit), 1000 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-1m/readings=1000", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, queue_flush 0 (each message committed), 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/committed/readings=30", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, queue_flush 0 (each message committed), 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/committed/readings=100", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, queue_flush 0 (each message committed), 1000 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/committed/readings=1000", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, default, a real mosquitto's acknowledgements, 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-broker/readings=30", "B/reading", true, 64, "%.1f"},
				{"disk bytes/reading, default, a real mosquitto's acknowledgements, 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-broker/readings=100", "B/reading", true, 64, "%.1f"},
				{"disk bytes/reading, hold file on the data disk, broker connected, 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-acked-disk/readings=30", "B/reading", true, 64, "%.1f"},
				{"disk bytes/reading, hold file on the data disk, broker connected, 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-acked-disk/readings=100", "B/reading", true, 64, "%.1f"},
				{"disk bytes/reading, hold file on the data disk, broker connected, 1000 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-acked-disk/readings=1000", "B/reading", true, 64, "%.2f"},
				{"disk bytes/reading, hold file on the data disk, no broker (30 msgs/commit), 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-5m-disk/readings=30", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, hold file on the data disk, no broker (30 msgs/commit), 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-offline-5m-disk/readings=100", "B/reading", true, 64, "%.0f"},
				{"disk bytes/reading, hold file on the data disk, a real mosquitto's acknowledgements, 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-broker-disk/readings=30", "B/reading", true, 64, "%.1f"},
				{"disk bytes/reading, hold file on the data disk, a real mosquitto's acknowledgements, 100 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/held-broker-disk/readings=100", "B/reading", true, 64, "%.1f"},
				{"wchar bytes/reading, default, broker connected, 30 readings/msg (hold file in tmpfs included)", "uplink", "BenchmarkDiskBytesPerReading/held-acked/readings=30", "wchar-B/reading", false, 0, "%.1f"},
				{"wchar bytes/reading, queue_flush 0, 30 readings/msg", "uplink", "BenchmarkDiskBytesPerReading/committed/readings=30", "wchar-B/reading", false, 0, "%.0f"},
			}, raw: []string{"uplink.txt"}},
		{title: "7. Binary and image", command: "make cross; stat -c %s bin/rackwatch-linux-arm64 · go test -run '^TestBoot$' -v ./images/mkimage/",
			notes: "The arm64 binary is built with -trimpath -ldflags '-s -w' (stripped). The boot time is the line images/mkimage's TestBoot logs (QEMU start → the status page answering through hostfwd), TCG emulation on this x86 machine, not KVM.",
			checks: []check{
				{"linux/arm64 binary (MB)", "binary", "", "arm64_mb", true, 20, "%.2f"},
				{"linux/armv7 binary (MB)", "binary", "", "armv7_mb", false, 0, "%.2f"},
				{"QEMU boot to status page (s)", "qemu", "", "boot_s", true, 10, "%.1f"},
			}, raw: []string{"binary.txt", "qemu.txt"}},
		{title: "8. Fleet", command: "make fleet N=" + text("fleet_n") + " (go run ./bench/fleet -n N)",
			notes: "N whole sites in one process (site.Run each: sim.ups, sim.env, sim.contact polled every 2 s, a rule, web on 127.0.0.1:0, own data dir and bbolt, own paho client, telemetry every 2 s) against one mosquitto with persistence; one paho subscriber on rackwatch/fleet/# with a persistent session counts. Online = the retained `online` R/state. Then mosquitto is stopped for 5 s and started again: reconnect times are when each site's fresh `online` arrives, measured from the broker's restart. Each inlet is over its rule's threshold 20 s of every minute, so incidents flow too. Finally every site is stopped and the telemetry and incident seqs the subscriber saw are checked against the last seq each site's database says it used: a seq neither received nor still queued on the site's disk is missing, after the highest seen as well as below it.",
			checks: []check{
				{"all online (s)", "fleet", "", "all_online_s", true, 10, "%.2f"},
				{"messages/s at the broker", "fleet", "", "msgs_per_s", false, 0, "%.0f"},
				{"reconnect: first (s after restart)", "fleet", "", "reconnect_first_s", false, 0, "%.2f"},
				{"reconnect: p50 (s)", "fleet", "", "reconnect_p50_s", false, 0, "%.2f"},
				{"reconnect: last (s)", "fleet", "", "reconnect_last_s", false, 0, "%.2f"},
				{"telemetry seqs missing (holes and a lost tail: up to the last seq each site's database says it used)", "fleet", "", "seq_missing", true, 0, "%.0f"},
				{"of which after the highest seq seen", "fleet", "", "seq_missing_tail", true, 0, "%.0f"},
				{"still queued on disk at the stop (sent at the next start)", "fleet", "", "seq_queued_at_stop", false, 0, "%.0f"},
				{"duplicates (at-least-once)", "fleet", "", "seq_duplicates", false, 0, "%.0f"},
				{"incident messages seen", "fleet", "", "incidents_seen", false, 0, "%.0f"},
				{"incident seqs missing (the same way)", "fleet", "", "incident_seq_missing", true, 0, "%.0f"},
				{"incident duplicates", "fleet", "", "incident_seq_duplicates", false, 0, "%.0f"},
			}, raw: []string{"fleet.txt"}},
		{title: "9. Storage", command: "BENCH_STORAGE_DURATION=" + text("storage_duration") + " go test -run '^$' -bench 'Storage(Quiet|Demo|Offline|Idle)$' -benchtime=1x ./bench/storage/ (four processes at once)",
			notes: "write_bytes of the whole rackwatch process (/proc/PID/io: what it sent to storage, counted per page dirtied) over the window, from 30 s after it listens, extrapolated to a day. quiet: 10 sim devices that do not change (UPSes on mains, inlets, feeds, contacts, a relay), rules and both policies, telemetry every 10 s to mosquitto, no incidents. demo: daemon/demo.yaml (the story: an incident every few minutes) with its embedded broker. offline: the quiet site with no broker reachable (every telemetry message queued on disk). idle: one contact read once a minute, a broker connected, the page and NUT listening. CPU is utime+stime (/proc/PID/stat) over the same window: per hour, and for the quiet site per device poll (all of the daemon's CPU divided by the polls its /metrics counted, so it includes telemetry, rules and housekeeping). The hold file is in $RUNTIME_DIRECTORY, on a tmpfs (/dev/shm) as under systemd and on the image (BENCH_STORAGE_HOLD_ON_DISK=1: on the disk).",
			checks: []check{
				{"quiet 10-device site, broker connected (MB/day)", "storage", "BenchmarkStorageQuiet", "MB/day", true, 10, "%.2f"},
				{"demo story (MB/day)", "storage", "BenchmarkStorageDemo", "MB/day", true, 50, "%.2f"},
				{"10-device site, no broker (MB/day)", "storage", "BenchmarkStorageOffline", "MB/day", true, 200, "%.1f"},
				{"idle site (one contact read a minute), broker connected (MB/day)", "storage", "BenchmarkStorageIdle", "MB/day", true, 10, "%.2f"},
				{"quiet 10-device site: CPU per hour (s)", "storage", "BenchmarkStorageQuiet", "cpu-s/hour", false, 0, "%.2f"},
				{"quiet 10-device site: CPU per device poll, everything included (µs)", "storage", "BenchmarkStorageQuiet", "cpu-µs/poll", false, 0, "%.0f"},
				{"idle site: CPU per hour (s)", "storage", "BenchmarkStorageIdle", "cpu-s/hour", false, 0, "%.2f"},
			}, raw: []string{"storage.txt"}},
		{title: "10. Fuzzing", command: "FUZZTIME=" + text("fuzztime") + " make fuzz",
			notes: "Every fuzz target of the module, one after the other (scripts/fuzz.sh); a crasher is kept under the package's testdata/fuzz/ and becomes a regression seed that `make test` runs. Inputs is the count of the target's last progress line; a target whose newest interesting input is being minimized shows no progress meanwhile, so a count can stand still for a while without a hang.",
			checks: []check{
				{"targets run", "fuzz", "", "fuzz_targets", false, 0, "%.0f"},
				{"targets that found a crasher", "fuzz", "", "fuzz_crashers", true, 0, "%.0f"},
			},
			rows: func() []string { return fuzzRows(text("fuzz.txt")) },
			raw:  []string{"fuzz.txt"}},
		{title: "11. Side by side with Telegraf", command: "RUNTIME_DIRECTORY=$(mktemp -d /dev/shm/rw.XXXX) RACKWATCH_BIN=bin/rackwatch " + text("sbs_args") + " ../shared/tools/side-by-side-telegraf.sh",
			notes: "rackwatch (`make build`) and Telegraf 1.37 (a custom build with only the plugins used) on Telegraf's own job, one after the other, rounds alternating: one UPS-MIB agent (snmpsim serving a Riello NetMan 204 walk) polled every second and published every second to mosquitto. rackwatch runs the script's config: history and the status page on, the rule engine and policies running, but no rule and no NUT listener configured (the shared script writes that config). rackwatch gets `RUNTIME_DIRECTORY` on a tmpfs, as its systemd unit and the image give it, so its hold file of held telemetry is in memory, not next to the database. Peak RSS is VmHWM, CPU is utime+stime over the run; medians over the rounds. The machine is shared, so CPU seconds vary between runs; the two programs run in the same conditions, so the ratio is what to read.",
			checks: []check{
				{"rackwatch: peak RSS (MB)", "side-by-side", "", "rackwatch_rss_mb", false, 0, "%.1f"},
				{"Telegraf: peak RSS (MB)", "side-by-side", "", "telegraf_rss_mb", false, 0, "%.1f"},
				{"rackwatch: CPU (s)", "side-by-side", "", "rackwatch_cpu_s", false, 0, "%.2f"},
				{"Telegraf: CPU (s)", "side-by-side", "", "telegraf_cpu_s", false, 0, "%.2f"},
				{"peak RSS rackwatch/Telegraf", "side-by-side", "", "rss_ratio", true, 0.6, "%.2f"},
				{"CPU rackwatch/Telegraf", "side-by-side", "", "cpu_ratio", true, 0.5, "%.2f"},
				{"anonymous RSS rackwatch/Telegraf", "side-by-side", "", "anon_ratio", false, 0, "%.2f"},
			}, raw: []string{"side-by-side.txt"}},
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (scripts/bench.sh → bench/report); do not edit by hand. Measurements, not tests: regressions are what to watch. Targets are issue 9's.\n\n")
	fmt.Fprintf(&b, "## Machine\n\n```\n%s\n```\n\n", text("machine"))
	if s := text("short"); s != "" {
		fmt.Fprintf(&b, "%s\n\n", s)
	}
	fmt.Fprintf(&b, "## Summary\n\n| measurement | value | target | verdict |\n| --- | --- | --- | --- |\n")
	for _, s := range secs {
		for _, c := range s.checks {
			if c.target != 0 || c.atMost {
				fmt.Fprintln(&b, c.rowAs(r, strings.SplitN(s.title, " ", 2)[1]+": "+c.what))
			}
		}
	}
	b.WriteString("\n")
	for _, s := range secs {
		fmt.Fprintf(&b, "## %s\n\n`%s`\n\n%s\n\n| what | value | target | verdict |\n| --- | --- | --- | --- |\n", s.title, s.command, s.notes)
		for _, c := range s.checks {
			fmt.Fprintln(&b, c.row(r))
		}
		if s.rows != nil {
			for _, row := range s.rows() {
				fmt.Fprintln(&b, row)
			}
		}
		for _, row := range r.unchecked(s.raw, s.checks) {
			fmt.Fprintln(&b, row)
		}
		// Why a target is missed is written by hand, next to this program (notes/N.md).
		if why, err := os.ReadFile(filepath.Join(*notes, strings.TrimSuffix(strings.Fields(s.title)[0], ".")+".md")); err == nil {
			fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(string(why)))
		}
		for _, f := range s.raw {
			if t := text(f); t != "" {
				fmt.Fprintf(&b, "\n<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n", f, t)
			}
		}
		b.WriteString("\n")
	}
	// Results recorded by runs that make bench does not do (make interop, make fleet-nats),
	// each dated with its commit, kept across regenerations (scripts/record.sh).
	recorded, _ := filepath.Glob(filepath.Join(*recordedDir, "*.md"))
	for _, f := range recorded {
		body, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(f), ".md")
		fmt.Fprintf(&b, "<!-- recorded:%s -->\n%s\n<!-- /recorded:%s -->\n\n", name, strings.TrimSpace(string(body)), name)
	}
	if err := os.WriteFile(*out, []byte(strings.TrimRight(b.String(), "\n")+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}
