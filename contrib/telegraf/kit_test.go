// Package telegraf holds the tests of the Telegraf kit (rackwatch.conf) and of the Grafana
// dashboard that reads what it writes (../grafana/rackwatch.json). This file runs in make test
// and needs no Telegraf; interop_test.go (build tag interop, make interop) runs the real one.
package telegraf

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// written is every measurement, tag and field name the kit's starlark source writes.
func written(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile("rackwatch.conf")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, re := range []string{`Metric\("([^"]+)"\)`, `\.(?:fields|tags)\["([^"]+)"\]`} {
		for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(string(src), -1) {
			out[m[1]] = true
		}
	}
	// Names written through a loop: for k in ("a", "b"): m.tags[k] / m.fields[k].
	loop := regexp.MustCompile(`for k in \(([^)]*)\):`)
	for _, ix := range loop.FindAllStringSubmatchIndex(string(src), -1) {
		body := strings.SplitN(string(src[ix[1]:]), "\n", 6)
		if !regexp.MustCompile(`m\.(?:tags|fields)\[k\]`).MatchString(strings.Join(body[:len(body)-1], "\n")) {
			continue
		}
		for _, q := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(string(src[ix[2]:ix[3]]), -1) {
			out[q[1]] = true
		}
	}
	return out
}

// queries is every InfluxQL query of the dashboard (panel targets and template variables).
func queries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../grafana/rackwatch.json")
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("rackwatch.json: %v", err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "query" {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	return out
}

// TestDashboardReadsWhatTheKitWrites: every measurement, tag and field a dashboard query
// names is one the kit's processor writes.
func TestDashboardReadsWhatTheKitWrites(t *testing.T) {
	w := written(t)
	for _, must := range []string{"rackwatch_reading", "rackwatch_incident", "rackwatch_state", "site", "node", "device", "metric", "value", "seq"} {
		if !w[must] {
			t.Errorf("the kit does not write %q (parsed: %v)", must, w)
		}
	}
	qs := queries(t)
	if len(qs) < 10 {
		t.Fatalf("only %d queries in the dashboard", len(qs))
	}
	ident := regexp.MustCompile(`"([^"]+)"`)
	alias := regexp.MustCompile(`(?i)\bAS "([^"]+)"`)
	for _, q := range qs {
		aliases := map[string]bool{}
		for _, m := range alias.FindAllStringSubmatch(q, -1) {
			aliases[m[1]] = true
		}
		for _, m := range ident.FindAllStringSubmatch(q, -1) {
			if !w[m[1]] && !aliases[m[1]] {
				t.Errorf("the dashboard reads %q, which the kit does not write: %s", m[1], q)
			}
		}
		if !strings.Contains(q, "rackwatch_") {
			t.Errorf("query reads no rackwatch_ measurement: %s", q)
		}
	}
}

// TestKitTopics: the kit subscribes to the three topics of CONTRACT.md §4 it turns into points,
// at QoS 1 with a persistent session (what arrives while Telegraf is away is kept).
func TestKitTopics(t *testing.T) {
	src, err := os.ReadFile("rackwatch.conf")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	for _, want := range []string{"/+/+/telemetry\"", "/+/+/incidents\"", "/+/+/state\"", "qos = 1", "persistent_session = true", "client_id = "} {
		if !strings.Contains(s, want) {
			t.Errorf("rackwatch.conf lacks %q", want)
		}
	}
	if slices.Contains(strings.Split(s, "\n"), "[agent]") {
		t.Error("rackwatch.conf has an [agent] table: it is a drop-in for telegraf.d, the agent is the user's")
	}
}
