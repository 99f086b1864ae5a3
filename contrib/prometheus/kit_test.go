// Package prometheus_test checks the Prometheus kit in this folder: promtool accepts the scrape
// config and the rules and passes the rules' unit tests, and every series the rules read is one
// that a running site exports (a renamed metric would otherwise leave an alert that never fires).
package prometheus_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	_ "github.com/rackwatch/rackwatch/sensors/all"
)

func TestPromtool(t *testing.T) {
	promtool := testpeer.Require(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "rackwatch.rules.yml"},
		{"test", "rules", "rackwatch.rules.test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestRulesReadRealSeries scrapes a site whose UPS is on battery and whose inlet is hot, with an
// uplink, and finds there every metric name and label matcher that the rules use.
func TestRulesReadRealSeries(t *testing.T) {
	rules, err := os.ReadFile("rackwatch.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	exposition := scrape(t)

	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\brackwatch_[a-z_]+\b`).FindAllString(string(rules), -1) {
		names[m] = true
	}
	if len(names) < 5 {
		t.Fatalf("only %d metric names found in the rules: %v", len(names), names)
	}
	for name := range names {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(exposition) {
			t.Errorf("the rules read %s, which the site does not export", name)
		}
	}
	// Each label matcher of the rules, on the metric it is used with.
	matchers := regexp.MustCompile(`(rackwatch_[a-z_]+)\{([^}]*)\}`).FindAllStringSubmatch(string(rules), -1)
	for _, m := range matchers {
		for _, lv := range strings.Split(m[2], ",") {
			lv = strings.TrimSpace(lv)
			if lv == "" {
				continue
			}
			if !regexp.MustCompile(`(?m)^` + m[1] + `\{[^}]*` + regexp.QuoteMeta(lv)).MatchString(exposition) {
				t.Errorf("the rules match %s{%s}, which the site does not export", m[1], lv)
			}
		}
	}
}

func scrape(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`site: kit
node: n1
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {embedded_broker: "127.0.0.1:%d"}
devices:
  - {id: ups1, driver: sim.ups, poll: 100ms, values: {ups.status: OB DISCHRG, battery.runtime: 400}}
  - {id: inlet-a, driver: sim.env, poll: 100ms, values: {temperature: 33.5, humidity: 40}}
failover:
  power: {ups: [ups1], shutdown_runtime_below: 600s, confirm_polls: 1}
`, filepath.ToSlash(dir), testpeer.FreePort(t))
	cfg, err := config.Parse("kit.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *site.Site, 1)
	done := make(chan error, 1)
	go func() {
		done <- site.Run(ctx, cfg, site.Options{Version: "test", Ready: func(s *site.Site) { ready <- s }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	var s *site.Site
	select {
	case s = <-ready:
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("site did not start in 60 s")
	}
	// Wait until the policy has ordered the shutdown (FSD) and the uplink is up, so that every
	// series the rules read is there.
	url := "http://" + s.WebAddr().String() + "/metrics"
	deadline := time.Now().Add(60 * time.Second)
	for {
		body := get(t, url)
		if strings.Contains(body, `rackwatch_ups_status{device="ups1",flag="FSD"} 1`) &&
			strings.Contains(body, "rackwatch_uplink_connected 1") &&
			strings.Contains(body, `metric="temperature"`) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s /metrics still lacks FSD, the uplink or the inlet:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
