package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/notify"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestNotifyDownAcrossRestart: a webhook target that is down while incidents open and
// resolve, and while the daemon is killed and started again, receives every event once it is
// back: each incident's events in order, incidents in the order they opened, nothing lost
// (a repeat is allowed: delivery is at least once).
func TestNotifyDownAcrossRestart(t *testing.T) {
	bin := buildDaemon(t)
	var mu sync.Mutex
	down := true
	var got []notify.Generic
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		var g notify.Generic
		json.Unmarshal(b, &g)
		got = append(got, g)
	}))
	defer srv.Close()
	dir := t.TempDir()
	webPort := testpeer.FreePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: dc1
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
devices:
  - id: leak
    driver: sim.contact
    poll: 100ms
    loop: true
    script:
      - {at: 200ms, set: {contact: 1}}
      - {at: 700ms, set: {contact: 0}}
      - {at: 1200ms}
rules:
  - {name: leak, device: leak, metric: contact, equals: 1, severity: critical}
incidents: {flap_count: 1000}
notify:
  targets:
    - {name: hook, type: webhook, url: %q, retry_max: 300ms}
  routes:
    - {targets: [hook]}
`, dir, webPort, srv.URL))
	metric := func(name string) float64 {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort))
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, name+`{target="hook"} `) {
				v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
				return v
			}
		}
		return -1
	}
	d := startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 60*time.Second, "events queued and failing", func() bool {
		return metric("rackwatch_notify_queued") >= 4 && metric("rackwatch_notify_failed_total") >= 1
	})
	d.stop(syscall.SIGKILL)
	d = startDaemon(t, bin, cfg)
	testpeer.Eventually(t, 60*time.Second, "the restarted daemon's metrics", func() bool { return metric("rackwatch_notify_queued") >= 4 })
	sent := func(id string) string {
		var ins []struct {
			ID   string            `json:"id"`
			Sent map[string]string `json:"sent"`
		}
		if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/api/v1/incidents?state=all", webPort), &ins); err != nil {
			return err.Error()
		}
		for _, in := range ins {
			if in.ID == id {
				return in.Sent["hook"]
			}
		}
		return "no incident " + id
	}
	if s := sent("rack1-1"); s != "queued" {
		t.Errorf("rack1-1 at hook while it is down: %q, want queued", s)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	testpeer.Eventually(t, 60*time.Second, "the queue delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 6
	})
	testpeer.Eventually(t, 60*time.Second, "rack1-1 shown delivered", func() bool { return sent("rack1-1") == "delivered" })
	d.stop(syscall.SIGTERM)

	mu.Lock()
	defer mu.Unlock()
	// Per incident: opened then resolved; incidents by number; no number skipped.
	last := map[string]string{}
	prevNum := 0
	for _, g := range got {
		n, _ := strconv.Atoi(strings.TrimPrefix(g.ID, "rack1-"))
		if n < prevNum {
			t.Errorf("incident %s after incident %d: %v", g.ID, prevNum, got)
		}
		if n > prevNum+1 {
			t.Errorf("incident %d skipped", prevNum+1)
		}
		prevNum = n
		switch {
		case g.Event.Event == "opened" && last[g.ID] == "":
		case g.Event.Event == last[g.ID]: // at least once
		case g.Event.Event == "resolved" && last[g.ID] == "opened":
		default:
			t.Errorf("incident %s: %s after %q", g.ID, g.Event.Event, last[g.ID])
		}
		last[g.ID] = g.Event.Event
		if g.Key != "dc1/rack1/"+g.ID || g.Site != "dc1" {
			t.Errorf("event %+v", g)
		}
	}
	if last["rack1-1"] != "resolved" || last["rack1-2"] != "resolved" {
		t.Errorf("the first two incidents not both delivered whole: %v", last)
	}
}
