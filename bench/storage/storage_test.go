// Package storage measures what a site costs the flash card: write_bytes of the whole rackwatch
// process (what it sent to storage, /proc/PID/io) over BENCH_STORAGE_DURATION (default 1h;
// BENCH_SHORT=1 makes it 3m), extrapolated to a day, and its CPU per hour and per poll, for
// four sites:
//   - quiet: 10 simulated devices that do not change, a broker connected, no incidents;
//   - demo: the demo story (incidents every few minutes) with its embedded broker;
//   - offline: the quiet site with no broker reachable, so every telemetry message is queued;
//   - idle: one contact read once a minute, a broker connected.
//
// The first BENCH_STORAGE_SETTLE (default 30s) after the site listens is left out: creating the
// database is a one-off, not a daily cost. It is benchmarks only (go test -bench Storage
// -benchtime=1x); the four can run at once (make bench does).
package storage

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func duration() time.Duration {
	def := time.Hour
	if os.Getenv("BENCH_SHORT") == "1" {
		def = 3 * time.Minute
	}
	return envDuration("BENCH_STORAGE_DURATION", def)
}

func binary(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("RACKWATCH_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			b.Fatal(err)
		}
		return abs
	}
	out := filepath.Join(b.TempDir(), "rackwatch")
	if msg, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "../../daemon").CombinedOutput(); err != nil {
		b.Fatalf("build rackwatch: %v\n%s", err, msg)
	}
	return out
}

// writeBytes is write_bytes of /proc/PID/io.
func writeBytes(pid int) (int64, error) {
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no write_bytes in /proc/%d/io", pid)
}

// cpuSeconds is utime+stime of /proc/PID/stat (in USER_HZ, 100 a second on Linux).
func cpuSeconds(pid int) (float64, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after it.
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	stm, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return (ut + stm) / 100, nil
}

// polls is the number of device polls the daemon listening on web has made: the sum of
// rackwatch_poll_duration_seconds_count over its devices.
func polls(web string) (float64, error) {
	resp, err := http.Get("http://" + web + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var n float64
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "rackwatch_poll_duration_seconds_count") {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				return 0, fmt.Errorf("metrics line %q: %w", l, err)
			}
			n += v
		}
	}
	return n, nil
}

// sample is what the daemon has written, the CPU it has taken and the polls it has made.
type sample struct {
	written    int64
	cpu, polls float64
}

func take(b *testing.B, p *testpeer.Proc, web string) sample {
	b.Helper()
	var s sample
	var err error
	pid := p.Cmd.Process.Pid
	if s.written, err = writeBytes(pid); err != nil {
		b.Fatalf("rackwatch exited early: %v\n%s", err, p.Output())
	}
	if s.cpu, err = cpuSeconds(pid); err != nil {
		b.Fatal(err)
	}
	if s.polls, err = polls(web); err != nil {
		b.Fatal(err)
	}
	return s
}

// measure runs rackwatch with args until it listens on ready, lets it settle, then reports
// the bytes it writes to storage per day at the rate of the measured window, and the CPU it
// took: per hour, and per device poll when it has devices.
func measure(b *testing.B, ready string, args ...string) {
	b.Helper()
	bin := binary(b)
	d, settle := duration(), envDuration("BENCH_STORAGE_SETTLE", 30*time.Second)
	for range b.N {
		b.StopTimer()
		p := testpeer.StartEnv(b, []string{"RUNTIME_DIRECTORY=" + runtimeDir(b)}, bin, args...)
		testpeer.WaitTCP(b, ready, 60*time.Second)
		time.Sleep(settle)
		s0 := take(b, p, ready)
		start := time.Now()
		b.StartTimer()
		time.Sleep(d)
		b.StopTimer()
		s1 := take(b, p, ready)
		el := time.Since(start)
		p.Stop()
		perDay := float64(s1.written-s0.written) * float64(24*time.Hour) / float64(el)
		b.ReportMetric(perDay/1e6, "MB/day")
		b.ReportMetric(float64(s1.written-s0.written), "bytes")
		b.ReportMetric(el.Seconds(), "wall-s")
		cpu := s1.cpu - s0.cpu
		b.ReportMetric(cpu*float64(time.Hour)/float64(el), "cpu-s/hour")
		if n := s1.polls - s0.polls; n > 0 {
			b.ReportMetric(cpu*1e6/n, "cpu-µs/poll")
			b.ReportMetric(n, "polls")
		}
		b.StartTimer()
	}
}

// runtimeDir is where the hold file goes, as systemd's RuntimeDirectory and the image's /run
// put it: on a tmpfs (/dev/shm), so that held telemetry costs the disk nothing, as in the
// field. BENCH_STORAGE_HOLD_ON_DISK=1 puts it in a temp dir on the disk instead.
func runtimeDir(b *testing.B) string {
	if os.Getenv("BENCH_STORAGE_HOLD_ON_DISK") != "1" {
		if d, err := os.MkdirTemp("/dev/shm", "rackwatch-storage-"); err == nil {
			b.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return b.TempDir()
}

func writeConfig(b *testing.B, yaml string) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "rackwatch.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// quietSite is ten sim devices with fixed values (a UPS on mains, inlets, a feed, contacts
// and a relay) and rules that never fire, reporting to brokerURL every 10 s.
func quietSite(b *testing.B, node, web, brokerURL string) string {
	return writeConfig(b, fmt.Sprintf(`site: storage
node: %s
data_dir: %s
web: {listen: %q}
mqtt: {brokers: [%q], telemetry_interval: 10s}
devices:
  - {id: ups1, driver: sim.ups, poll: 2s}
  - {id: ups2, driver: sim.ups, poll: 2s}
  - {id: inlet-a, driver: sim.env, poll: 5s, values: {temperature: 23.4, humidity: 41}}
  - {id: inlet-b, driver: sim.env, poll: 5s, values: {temperature: 23.9, humidity: 43}}
  - {id: inlet-c, driver: sim.env, poll: 5s, values: {temperature: 24.1, humidity: 42}}
  - {id: feed-a, driver: sim.power, poll: 1s, values: {voltage: 229.8, current: 6.2, power: 1425}}
  - {id: feed-b, driver: sim.power, poll: 1s, values: {voltage: 230.1, current: 5.9, power: 1357}}
  - {id: door, driver: sim.contact, poll: 1s}
  - {id: leak, driver: sim.contact, poll: 1s}
  - {id: crac2, driver: sim.relay, safe_state: "off"}
rules:
  - {name: inlet-a-temp, device: inlet-a, metric: temperature, warn_above: 27, crit_above: 32}
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB}
  - {name: leak, device: leak, metric: contact, equals: 1}
failover:
  power: {ups: [ups1, ups2]}
  cooling: {sensors: [inlet-a, inlet-b, inlet-c], backup_relay: crac2, on_above: 32}
`, node, b.TempDir(), web, brokerURL))
}

func webAddr(b *testing.B) string { return fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(b)) }

// BenchmarkStorageQuiet: the quiet site with mosquitto acknowledging. Budget ≤ 10 MB a day.
func BenchmarkStorageQuiet(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	web := webAddr(b)
	measure(b, web, "-config", quietSite(b, "quiet", web, m.URL))
}

// BenchmarkStorageIdle: a site with one door contact read once a minute (a site needs a
// device) and a broker connected: what the daemon costs when there is nothing to do (the page,
// NUT and the uplink still up).
func BenchmarkStorageIdle(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	web := webAddr(b)
	measure(b, web, "-config", writeConfig(b, fmt.Sprintf(`site: storage
node: idle
data_dir: %s
web: {listen: %q}
mqtt: {brokers: [%q], telemetry_interval: 10s}
nut: {listen: "127.0.0.1:%d"}
devices:
  - {id: door, driver: sim.contact, poll: 1m}
`, b.TempDir(), web, m.URL, testpeer.FreePort(b))))
}

// BenchmarkStorageOffline: the quiet site whose broker never answers. Budget ≤ 200 MB a day.
func BenchmarkStorageOffline(b *testing.B) {
	web := webAddr(b)
	measure(b, web, "-config", quietSite(b, "offline", web, fmt.Sprintf("tcp://127.0.0.1:%d", testpeer.FreePort(b))))
}

// BenchmarkStorageDemo: the demo story (daemon/demo.yaml) on free ports. Budget ≤ 50 MB a day.
func BenchmarkStorageDemo(b *testing.B) {
	demo, err := os.ReadFile("../../daemon/demo.yaml")
	if err != nil {
		b.Fatal(err)
	}
	web := webAddr(b)
	y := string(demo)
	for old, new := range map[string]string{
		"listen: 127.0.0.1:8080":          "listen: " + web,
		"embedded_broker: 127.0.0.1:1883": fmt.Sprintf("embedded_broker: 127.0.0.1:%d", testpeer.FreePort(b)),
		"listen: 127.0.0.1:3493":          fmt.Sprintf("listen: 127.0.0.1:%d", testpeer.FreePort(b)),
	} {
		if !strings.Contains(y, old) {
			b.Fatalf("demo.yaml no longer has %q", old)
		}
		y = strings.Replace(y, old, new, 1)
	}
	y = strings.Replace(y, "node: rack1\n", fmt.Sprintf("node: rack1\ndata_dir: %s\n", b.TempDir()), 1)
	measure(b, web, "-config", writeConfig(b, y))
}
