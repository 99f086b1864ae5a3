package site

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/kpi"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// startBenchSite runs a site from YAML in-process, for benchmarks as well as tests.
func startBenchSite(tb testing.TB, yaml string) *Site {
	tb.Helper()
	cfg, err := config.Parse("bench.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	return runSiteOpts(tb, cfg, Options{Version: "bench"})
}

// benchSiteYAML is a site of ten simulated devices (a UPS, inlet sensors, a PDU meter, a door,
// two relays) with rules and both policies; extra goes into its mqtt section.
func benchSiteYAML(tb testing.TB, broker, extra string) string {
	return fmt.Sprintf(`site: bench
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: ["%s"]%s}
incidents: {retention: 1h}
devices:
  - {id: ups1, driver: sim.ups, poll: 2s}
  - {id: inlet-a, driver: sim.env, poll: 5s, values: {temperature: 23.4, humidity: 41}}
  - {id: inlet-b, driver: sim.env, poll: 5s, values: {temperature: 23.9, humidity: 43}}
  - {id: inlet-c, driver: sim.env, poll: 5s, values: {temperature: 24.1, humidity: 42}}
  - {id: outlet-a, driver: sim.env, poll: 5s, values: {temperature: 31.2, humidity: 30}}
  - {id: pdu-a, driver: sim.power, poll: 5s, values: {voltage: 229.8, current: 6.2, power: 1425}}
  - {id: pdu-b, driver: sim.power, poll: 5s, values: {voltage: 230.1, current: 5.8, power: 1334}}
  - {id: door, driver: sim.contact, poll: 1s, values: {contact: 0}}
  - {id: genset, driver: sim.relay, safe_state: "off"}
  - {id: crac2, driver: sim.relay, safe_state: "off"}
rules:
  - {name: ups1-on-battery, device: ups1, metric: ups.status, status_has: OB}
  - {name: inlet-hot, device: inlet-a, metric: temperature, warn_above: 27, crit_above: 32}
  - {name: door-open, device: door, metric: contact, equals: 1}
failover:
  power: {ups: [ups1], generator_relay: genset}
  cooling: {sensors: [inlet-a, inlet-b, inlet-c], metric: temperature, on_above: 27, off_below: 25, backup_relay: crac2}
`, tb.TempDir(), broker, extra)
}

// writeBytes is what this process has had written to storage so far (write_bytes of
// /proc/self/io: the pages it dirtied, before the filesystem adds its journal).
func writeBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Skip("no write_bytes in /proc/self/io")
	return 0
}

// drained waits until the broker has acknowledged everything queued and the deletes of
// acknowledged incident messages are committed, in a commit of their own when none came to
// carry them (those of telemetry wait up to 30 s and ride along with the next commit: not
// counted here).
func drained(tb testing.TB, s *Site) {
	testpeer.Eventually(tb, 60*time.Second, "the uplink queue drained", func() bool {
		if s.sh.uplink().Status().Queued != 0 {
			return false
		}
		n := -1
		s.db.View(func(tx *bolt.Tx) error {
			n = tx.Bucket([]byte("uplink.incidents")).Stats().KeyN
			return nil
		})
		if n > 0 {
			// The deletes of acknowledged incident messages wait up to 10 minutes for a commit
			// to ride in: here they get one of their own (so a figure includes it).
			if del, settle := s.sh.uplink().AckedTx(s.db); del != nil {
				settle(s.db.Update(del))
			}
		}
		return n == 0
	})
}

// BenchmarkEventWrites: what one event of each kind costs the storage on a quiet site with a
// broker: bytes written by the process and bbolt commits, per event, once the broker has
// acknowledged what was sent. README "Flash writes" quotes these.
func BenchmarkEventWrites(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	// Telemetry only when the benchmark asks for it.
	s := startBenchSite(b, benchSiteYAML(b, m.URL, ", telemetry_interval: 24h"))
	testpeer.Eventually(b, 60*time.Second, "every device read", func() bool { return len(s.store.Devices()) == 10 && s.sh.uplink().Status().Connected })
	toggle := 0 // across the runs of a sub-benchmark, so that every call is a change
	measure := func(b *testing.B, events int, do func(i int)) {
		drained(b, s)
		c0, w0, p0 := commits(s.db), writeBytes(b), boltBytes(s.db)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			toggle++
			do(toggle)
		}
		drained(b, s)
		b.StopTimer()
		n := float64(b.N * events)
		b.ReportMetric(float64(writeBytes(b)-w0)/n, "B/event")
		b.ReportMetric(float64(boltBytes(s.db)-p0)/n, "bolt-B/event")
		b.ReportMetric(float64(commits(s.db)-c0)/n, "commits/event")
	}
	b.Run("incident", func(b *testing.B) { // opened, then resolved: two events
		measure(b, 2, func(i int) {
			key := fmt.Sprintf("bench-%d-%d", b.N, i)
			s.raise(incident.Raise{Key: key, Rule: "bench", Device: "door", Severity: "warning", Source: "rule", Summary: "bench"}, time.Now())
			s.resolve(key, nil, time.Now())
		})
	})
	b.Run("incidents-one-poll", func(b *testing.B) { // two opened by one poll result, then two resolved by one: four events
		measure(b, 4, func(i int) {
			moment := func(f func(key string)) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.batch.begin()
				f(fmt.Sprintf("poll-%d-%d-a", b.N, i))
				f(fmt.Sprintf("poll-%d-%d-b", b.N, i))
				s.batch.end(false)
			}
			moment(func(key string) {
				s.raise(incident.Raise{Key: key, Rule: "bench", Device: "door", Severity: "warning", Source: "rule", Summary: "bench"}, time.Now())
			})
			moment(func(key string) { s.resolve(key, nil, time.Now()) })
		})
	})
	b.Run("relay", func(b *testing.B) { // an operator override, saved
		measure(b, 1, func(i int) {
			if err := s.SetRelay("genset", []string{"on", "off"}[i%2], "bench"); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("kpi", func(b *testing.B) { // a condition change in the KPI log
		measure(b, 1, func(i int) {
			if err := s.kpis.Record(kpi.Cooling, i%2 == 1, time.Now()); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("telemetry-held", func(b *testing.B) { // a snapshot of every reading, acknowledged in time
		measure(b, 1, func(int) { s.telemetry() })
	})
	at := time.Now().Add(2 * time.Hour) // the virtual clock of the prunes below, only forward
	b.Run("prune", func(b *testing.B) { // the hourly retention pass that deletes one expired incident
		var c, w int64
		for i := 0; i < b.N; i++ {
			key := fmt.Sprintf("prune-%d-%d", b.N, i)
			s.raise(incident.Raise{Key: key, Rule: "bench", Severity: "warning", Source: "rule", Summary: "bench"}, time.Now())
			s.resolve(key, nil, time.Now())
			drained(b, s)
			c0, w0 := commits(s.db), writeBytes(b)
			at = at.Add(incident.PruneEvery)
			s.inc.Tick(at)
			c, w = c+int64(commits(s.db)-c0), w+writeBytes(b)-w0
		}
		b.ReportMetric(float64(w)/float64(b.N), "B/event")
		b.ReportMetric(float64(c)/float64(b.N), "commits/event")
	})
	b.Run("prune-nothing", func(b *testing.B) { // the hourly pass when nothing expired
		measure(b, 1, func(int) {
			at = at.Add(incident.PruneEvery)
			s.inc.Tick(at)
		})
	})
}

// BenchmarkTelemetryCommitted: a telemetry message committed to the queue (mqtt.queue_flush:
// 0, or held telemetry that outlived queue_flush), then deleted once acknowledged.
func BenchmarkTelemetryCommitted(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	s := startBenchSite(b, benchSiteYAML(b, m.URL, ", telemetry_interval: 24h, queue_flush: 0s"))
	testpeer.Eventually(b, 60*time.Second, "every device read", func() bool { return len(s.store.Devices()) == 10 && s.sh.uplink().Status().Connected })
	drained(b, s)
	c0, w0, p0 := commits(s.db), writeBytes(b), boltBytes(s.db)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.telemetry()
	}
	drained(b, s)
	b.StopTimer()
	b.ReportMetric(float64(writeBytes(b)-w0)/float64(b.N), "B/event")
	b.ReportMetric(float64(boltBytes(s.db)-p0)/float64(b.N), "bolt-B/event")
	b.ReportMetric(float64(commits(s.db)-c0)/float64(b.N), "commits/event")
}

// boltBytes is what bbolt has written to db so far by its own count: the pages its commits
// allocated and one meta page each.
func boltBytes(db *bolt.DB) int64 {
	st := db.Stats()
	return st.TxStats.GetPageAlloc() + int64(commits(db)*db.Info().PageSize)
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// contextSwitches is the context switches of every thread of this process so far: each
// voluntary one is a thread going to sleep, so their rate counts wakeups.
func contextSwitches() int64 {
	dirs, _ := filepath.Glob("/proc/self/task/*/status")
	var n int64
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "voluntary_ctxt_switches:"); ok {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
		f.Close()
	}
	return n
}

// BenchmarkIdleSite: the ten-device site with a broker and nothing happening, one second per
// op (run it with -benchtime=60x or longer): CPU per idle hour and per poll, wakeups a second,
// bytes written an hour and commits.
func BenchmarkIdleSite(b *testing.B) {
	m := testpeer.StartMosquitto(b)
	sub := m.Subscribe(b, "rackwatch/#", "")
	s := startBenchSite(b, benchSiteYAML(b, m.URL, ", telemetry_interval: 10s"))
	testpeer.Eventually(b, 90*time.Second, "telemetry on mosquitto", func() bool { return len(sub.Matching("/telemetry", `"door"`)) >= 2 })
	sub.Stop()
	var pollsPerSec float64
	for _, d := range s.cfg.Devices {
		if d.Poll > 0 && !config.IsRelay(d) {
			pollsPerSec += float64(time.Second) / float64(d.Poll)
		}
	}
	cpu0, cs0, w0, c0, t0 := cpuTime(), contextSwitches(), writeBytes(b), commits(s.db), time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	el := time.Since(t0)
	cpu := cpuTime() - cpu0
	hours := el.Hours()
	b.ReportMetric(float64(cpu.Milliseconds())/hours/1000, "cpu-s/idle-hour")
	b.ReportMetric(float64(cpu.Microseconds())/(pollsPerSec*el.Seconds()), "cpu-µs/poll")
	b.ReportMetric(float64(contextSwitches()-cs0)/el.Seconds(), "wakeups/s")
	b.ReportMetric(float64(writeBytes(b)-w0)/hours/1e6, "MB-written/hour")
	b.ReportMetric(float64(commits(s.db)-c0)/hours, "commits/hour")
}
