//go:build interop

// The Telegraf kit against a real Telegraf (`make interop`, not part of `make test`: it needs
// a Telegraf build, TELEGRAF_BIN). The daemon runs the demo site against a real mosquitto;
// Telegraf runs rackwatch.conf with a file output in line protocol. Mid-run mosquitto is
// restarted and the daemon is SIGKILLed and started again, so messages already delivered go
// again; a second subscriber records what went over the wire. The output must hold the
// expected series and every seq the wire carried, each once.
package telegraf

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// point is one line of line protocol.
type point struct {
	name   string
	tags   map[string]string
	fields map[string]string // raw: 1.5, 3i, "text" (quotes kept)
	ts     string
}

func (p point) series() string {
	keys := make([]string, 0, len(p.tags))
	for k := range p.tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := p.name
	for _, k := range keys {
		s += "," + k + "=" + p.tags[k]
	}
	return s
}

// splitLP splits s at unescaped, unquoted sep.
func splitLP(s string, sep byte, max int) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted && (max < 0 || len(out) < max-1):
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func unescape(s string) string {
	return strings.NewReplacer(`\ `, " ", `\,`, ",", `\=`, "=", `\"`, `"`, `\\`, `\`).Replace(s)
}

func parseLine(line string) (point, error) {
	parts := splitLP(line, ' ', 3)
	if len(parts) != 3 {
		return point{}, fmt.Errorf("not measurement,tags fields ts: %q", line)
	}
	p := point{tags: map[string]string{}, fields: map[string]string{}, ts: parts[2]}
	head := splitLP(parts[0], ',', -1)
	p.name = unescape(head[0])
	for _, kv := range head[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return point{}, fmt.Errorf("tag %q: %q", kv, line)
		}
		p.tags[unescape(k)] = unescape(v)
	}
	for _, kv := range splitLP(parts[1], ',', -1) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return point{}, fmt.Errorf("field %q: %q", kv, line)
		}
		p.fields[unescape(k)] = v
	}
	return p, nil
}

func readPoints(t *testing.T, path string) []point {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []point
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if sc.Text() == "" {
			continue
		}
		p, err := parseLine(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// wireSeqs is, per stream (telemetry, incidents), how often each seq crossed the wire.
func wireSeqs(s *testpeer.Sub) map[string]map[uint64]int {
	out := map[string]map[uint64]int{"telemetry": {}, "incidents": {}}
	for _, l := range s.Lines() {
		topic, payload, _ := strings.Cut(l, " ")
		kind := topic[strings.LastIndexByte(topic, '/')+1:]
		if out[kind] == nil {
			continue
		}
		var p struct {
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal([]byte(payload), &p) == nil && p.Seq > 0 {
			out[kind][p.Seq]++
		}
	}
	return out
}

func dups(m map[uint64]int) (n int) {
	for _, c := range m {
		n += c - 1
	}
	return n
}

func TestInterop(t *testing.T) {
	tg := os.Getenv("TELEGRAF_BIN")
	if tg == "" {
		t.Fatal("TELEGRAF_BIN is not set: run `make interop`, which builds Telegraf 1.37 once")
	}
	ver, err := exec.Command(tg, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", tg, err)
	}
	dir := t.TempDir()
	rw := filepath.Join(dir, "rackwatch")
	if out, err := exec.Command("go", "build", "-o", rw, "github.com/rackwatch/rackwatch/daemon").CombinedOutput(); err != nil {
		t.Fatalf("build the daemon: %v\n%s", err, out)
	}
	m := testpeer.StartMosquitto(t)
	wire := m.Subscribe(t, "rackwatch/#", "interop-wire")

	// The demo site, its broker replaced by the mosquitto, telemetry every 2 s, no NUT
	// listener (the port may be taken).
	demo, err := os.ReadFile("../../daemon/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(demo, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["data_dir"] = filepath.Join(dir, "data")
	cfg["web"] = map[string]any{"listen": "127.0.0.1:0"}
	cfg["mqtt"] = map[string]any{"brokers": []string{m.URL}, "telemetry_interval": "2s"}
	delete(cfg, "nut")
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "rackwatch.yaml")
	if err := os.WriteFile(conf, b, 0o644); err != nil {
		t.Fatal(err)
	}

	kit := "rackwatch.conf"
	if os.Getenv("INTEROP_NO_DEDUP") != "" { // to see the check fail without the dedup
		src, _ := os.ReadFile(kit)
		s := strings.Replace(string(src), "if last != None and seq <= last:", "if False:", 1)
		kit = filepath.Join(dir, "nodedup.conf")
		os.WriteFile(kit, []byte(s), 0o644)
	}
	out := filepath.Join(dir, "points.lp")
	outConf := filepath.Join(dir, "output.conf")
	os.WriteFile(outConf, []byte(fmt.Sprintf(`[agent]
  interval = "1s"
  flush_interval = "1s"
  omit_hostname = true
[[outputs.file]]
  files = [%q]
  data_format = "influx"
  namepass = ["rackwatch_*"]
`, out)), 0o644)
	telegraf := testpeer.StartEnv(t, []string{"RACKWATCH_MQTT_SERVER=" + m.URL, "RACKWATCH_TELEGRAF_CLIENT_ID=interop-telegraf"},
		tg, "--config", kit, "--config", outConf)
	testpeer.Eventually(t, 60*time.Second, "Telegraf connected to mosquitto", func() bool {
		return strings.Contains(telegraf.Output(), "Connected [")
	})

	env := []string{"RUNTIME_DIRECTORY=" + filepath.Join(dir, "run")}
	os.MkdirAll(filepath.Join(dir, "run"), 0o755)
	daemon := testpeer.StartEnv(t, env, rw, "-config", conf)
	count := func(kind string) int { return len(wireSeqs(wire)[kind]) }
	testpeer.Eventually(t, 90*time.Second, "the door incident of the demo story (0:30)", func() bool { return count("incidents") >= 1 })

	// A broker restart: both rackwatch and Telegraf reconnect; their sessions are kept.
	m.Stop()
	m.Start()
	n := count("telemetry")
	testpeer.Eventually(t, 90*time.Second, "telemetry after the broker restart", func() bool { return count("telemetry") >= n+3 })

	// A crash: what was delivered but not yet deleted from the daemon's queue goes again.
	daemon.Cmd.Process.Kill()
	daemon.Cmd.Wait()
	n = count("telemetry")
	testpeer.StartEnv(t, env, rw, "-config", conf)
	testpeer.Eventually(t, 90*time.Second, "telemetry after the daemon's restart", func() bool { return count("telemetry") >= n+3 })
	testpeer.Eventually(t, 60*time.Second, "a redelivery on the wire (at least once)", func() bool {
		w := wireSeqs(wire)
		return dups(w["telemetry"])+dups(w["incidents"]) > 0
	})

	// Everything the wire carried reaches the output.
	seqsOut := func(ps []point, name string) map[uint64]int {
		c := map[uint64]int{}
		for _, p := range ps {
			if p.name == name {
				q, _ := strconv.ParseUint(strings.TrimSuffix(p.fields["seq"], "i"), 10, 64)
				c[q]++
			}
		}
		return c
	}
	w := wireSeqs(wire)
	testpeer.Eventually(t, 60*time.Second, "every seq on the wire in Telegraf's output", func() bool {
		ps := readPoints(t, out)
		tel, inc := seqsOut(ps, "rackwatch_reading"), seqsOut(ps, "rackwatch_incident")
		for q := range w["telemetry"] {
			if tel[q] == 0 {
				return false
			}
		}
		for q := range w["incidents"] {
			if inc[q] == 0 {
				return false
			}
		}
		return true
	})
	telegraf.Stop()
	w = wireSeqs(wire)
	ps := readPoints(t, out)

	// The expected series and tags.
	bySeries := map[string]int{}
	names := map[string]int{}
	devices := map[string]bool{}
	var text bool
	for _, p := range ps {
		names[p.name]++
		bySeries[p.series()]++
		if p.name == "rackwatch_reading" {
			devices[p.tags["device"]] = true
			if p.tags["site"] != "demo" || p.tags["node"] != "rack1" || p.tags["metric"] == "" {
				t.Errorf("reading without site=demo, node=rack1 and a metric: %+v", p)
			}
			if _, ok := p.fields["value_text"]; ok {
				text = true
			}
			if p.fields["quality"] == "" {
				t.Errorf("reading without quality: %+v", p)
			}
		}
		if p.name == "rackwatch_incident" && (p.tags["event"] == "" || p.tags["severity"] == "" || p.tags["rule"] == "") {
			t.Errorf("incident without event, severity or rule: %+v", p)
		}
		if p.name == "rackwatch_seq_gap" {
			t.Errorf("a seq gap reported: %+v", p)
		}
	}
	for _, name := range []string{"rackwatch_reading", "rackwatch_incident", "rackwatch_state"} {
		if names[name] == 0 {
			t.Errorf("no %s points", name)
		}
	}
	for _, d := range []string{"ups1", "inlet-a", "door"} {
		if !devices[d] {
			t.Errorf("no readings of device %s (have %v)", d, devices)
		}
	}
	if !text {
		t.Error("no text reading (ups.status) as value_text")
	}
	// Every metric a dashboard panel plots is in the demo site's feed as the kit writes it.
	metrics := map[string]bool{}
	for _, p := range ps {
		if p.name == "rackwatch_reading" {
			metrics[p.tags["metric"]] = true
		}
	}
	for _, q := range queries(t) {
		for _, m := range regexp.MustCompile(`"metric" = '([^']+)'`).FindAllStringSubmatch(q, -1) {
			if !metrics[m[1]] {
				t.Errorf("the dashboard plots metric %q, not in the output (have %v)", m[1], metrics)
			}
		}
	}

	// No duplicates: the same series, timestamp and seq twice.
	seen := map[string]int{}
	var dupPoints int
	for _, p := range ps {
		if p.fields["seq"] == "" {
			continue
		}
		k := p.series() + " " + p.ts + " " + p.fields["seq"]
		seen[k]++
		if seen[k] == 2 {
			dupPoints++
			if dupPoints <= 5 {
				t.Errorf("duplicate point: %s", k)
			}
		}
	}
	tel, inc := seqsOut(ps, "rackwatch_reading"), seqsOut(ps, "rackwatch_incident")
	for q := range tel {
		if w["telemetry"][q] == 0 {
			t.Errorf("telemetry seq %d in the output but never on the wire", q)
		}
	}
	var dropped string
	for _, p := range ps {
		if p.name == "rackwatch_dedup" {
			dropped = strings.TrimSuffix(p.fields["dropped"], "i")
		}
	}
	wireDups := dups(w["telemetry"]) + dups(w["incidents"])
	fmt.Printf("interop: %s: %d points in %d series (%d readings, %d incidents, %d states); wire: %d telemetry and %d incident seqs, %d redelivered; output: %d telemetry and %d incident seqs, %d duplicate points, dedup dropped %s",
		strings.TrimSpace(string(ver)), len(ps), len(bySeries), names["rackwatch_reading"], names["rackwatch_incident"], names["rackwatch_state"],
		len(w["telemetry"]), len(w["incidents"]), wireDups, len(tel), len(inc), dupPoints, dropped)
	fmt.Printf("\ntelegraf_version=%s\npoints=%d\nseries=%d\nwire_telemetry_seqs=%d\nwire_incident_seqs=%d\nwire_redelivered=%d\nout_telemetry_seqs=%d\nout_incident_seqs=%d\nduplicate_points=%d\ndedup_dropped=%s\n",
		strings.TrimPrefix(strings.TrimSpace(string(ver)), "Telegraf "), len(ps), len(bySeries), len(w["telemetry"]), len(w["incidents"]), wireDups, len(tel), len(inc), dupPoints, dropped)
}
