// Package footprint measures issue 9's footprint: peak RSS and CPU seconds of the rackwatch
// binary, as a separate process, over BENCH_DURATION (default 5m; BENCH_SHORT=1 makes it 30s)
// for (a) the demo site, (b) one upsmib device polled every second from snmpsim with
// telemetry to mosquitto, (c) 1,000 simulated sensors polled every second. It is benchmarks
// only (go test -bench Footprint -benchtime=1x); it imports nothing of rackwatch but testpeer.
package footprint

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// duration is how long each footprint runs.
func duration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("BENCH_DURATION")); err == nil && d > 0 {
		return d
	}
	if os.Getenv("BENCH_SHORT") == "1" {
		return 30 * time.Second
	}
	return 5 * time.Minute
}

var built string // a build shared by the benchmarks of one run

// binary is RACKWATCH_BIN, or a fresh build of ./daemon as `make build` makes it.
func binary(b *testing.B) string {
	b.Helper()
	if built != "" {
		return built
	}
	if p := os.Getenv("RACKWATCH_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			b.Fatal(err)
		}
		return abs
	}
	dir, err := os.MkdirTemp("", "rackwatch-footprint-")
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "rackwatch")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "../../daemon")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build rackwatch: %v\n%s", err, msg)
	}
	built = out
	return out
}

// usage is what /proc says of a process.
type usage struct {
	peakRSS int64         // VmHWM, bytes
	rss     int64         // VmRSS now, bytes
	cpu     time.Duration // utime + stime
}

func readUsage(pid int) (usage, error) {
	var u usage
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		if len(f) < 1 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			u.peakRSS = n << 10
		case "VmRSS":
			u.rss = n << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name (which may hold spaces) start at field 3 (state).
	rest := string(stat[bytes.LastIndexByte(stat, ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return u, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	u.cpu = time.Duration(ut+stt) * time.Second / hz
	return u, nil
}

// run starts rackwatch with args, waits until it listens on ready, lets it run for duration,
// and reports its peak RSS, CPU seconds and CPU share of one core.
func run(b *testing.B, env []string, ready string, args ...string) {
	b.Helper()
	bin := binary(b)
	d := duration()
	for range b.N {
		b.StopTimer()
		p := testpeer.StartEnv(b, env, bin, args...)
		testpeer.WaitTCP(b, ready, 60*time.Second)
		pid := p.Cmd.Process.Pid
		start := time.Now()
		var sumRSS, samples int64
		b.StartTimer()
		for time.Since(start) < d {
			time.Sleep(time.Second)
			u, err := readUsage(pid)
			if err != nil {
				b.Fatalf("rackwatch exited early: %v\n%s", err, p.Output())
			}
			sumRSS += u.rss
			samples++
		}
		b.StopTimer()
		u, err := readUsage(pid)
		if err != nil {
			b.Fatalf("rackwatch exited early: %v\n%s", err, p.Output())
		}
		el := time.Since(start)
		p.Stop()
		if c, err := net.DialTimeout("tcp", ready, time.Second); err == nil {
			c.Close()
		}
		mb := func(n int64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(mb(u.peakRSS), "peakRSS-MB")
		b.ReportMetric(mb(sumRSS/max(samples, 1)), "meanRSS-MB")
		b.ReportMetric(u.cpu.Seconds(), "cpu-s")
		b.ReportMetric(100*u.cpu.Seconds()/el.Seconds(), "cpu-%core")
		b.ReportMetric(el.Seconds(), "wall-s")
		b.StartTimer()
	}
}

func writeConfig(b *testing.B, yaml string) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "rackwatch.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkFootprintDemo is (a): `rackwatch` with no flags, the built-in demo site (embedded
// broker on 1883, web on 8080, NUT on 3493: those ports must be free). Target ≤ 25 MB RSS.
func BenchmarkFootprintDemo(b *testing.B) {
	for _, port := range []string{"8080", "1883", "3493"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			c.Close()
			b.Skipf("port %s is in use: the demo needs 8080, 1883 and 3493", port)
		}
	}
	run(b, []string{"RACKWATCH_DEMO_DIR=" + b.TempDir()}, "127.0.0.1:8080")
}

// BenchmarkFootprintUPSMIB is (b): one upsmib device polled every second from snmpsim (a
// real UPS's walk), telemetry every 10 s to mosquitto, web on.
func BenchmarkFootprintUPSMIB(b *testing.B) {
	walk, _ := filepath.Abs("../../sensors/upsmib/testdata/riello_netman204.snmprec")
	snmp := testpeer.StartSnmpsim(b, walk)
	m := testpeer.StartMosquitto(b)
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(b))
	cfg := writeConfig(b, fmt.Sprintf(`site: fp
node: upsmib
data_dir: %s
web: {listen: "%s"}
mqtt: {brokers: ["%s"], telemetry_interval: 10s}
devices:
  - {id: ups1, driver: upsmib, target: "%s", community: riello_netman204, version: 2c, poll: 1s}
rules:
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB}
`, b.TempDir(), web, m.URL, snmp))
	run(b, nil, web, "-config", cfg)
}

// BenchmarkFootprint1000Sim is (c): 1,000 sim.env devices (temperature and humidity each),
// each polled every second, a threshold rule on every temperature, telemetry every 10 s to
// mosquitto, web on. Targets ≤ 60 MB RSS and ≤ 5 % of one core.
func BenchmarkFootprint1000Sim(b *testing.B) { simSite(b, 1000, nil) }

// BenchmarkFootprint1000Metrics is (c) read as 1,000 measured quantities: 500 sim.env devices.
func BenchmarkFootprint1000Metrics(b *testing.B) { simSite(b, 500, nil) }

// BenchmarkFootprint1000Metrics24h is (c') after a day: every metric's history starts with
// 24 h in place (the state package's benchmark variable fills each ring, one point a minute,
// before its first reading), so the rings are full from the first minute rather than after a
// day. Target ≤ 60 MB RSS.
func BenchmarkFootprint1000Metrics24h(b *testing.B) {
	simSite(b, 500, []string{"RACKWATCH_BENCH_PREFILL_HISTORY=24h"})
}

func simSite(b *testing.B, devices int, env []string) {
	m := testpeer.StartMosquitto(b)
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(b))
	var y strings.Builder
	fmt.Fprintf(&y, "site: fp\nnode: sim%d\ndata_dir: %s\nweb: {listen: %q}\nmqtt: {brokers: [%q], telemetry_interval: 10s}\ndevices:\n", devices, b.TempDir(), web, m.URL)
	for i := range devices {
		fmt.Fprintf(&y, "  - {id: s%04d, driver: sim.env, poll: 1s, values: {temperature: %d, humidity: 40}}\n", i, 20+i%8)
	}
	y.WriteString("rules:\n")
	for i := range devices {
		fmt.Fprintf(&y, "  - {name: hot-%04d, device: s%04d, metric: temperature, warn_above: 30, crit_above: 35}\n", i, i)
	}
	run(b, env, web, "-config", writeConfig(b, y.String()))
}
