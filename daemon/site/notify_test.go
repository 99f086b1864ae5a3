package site

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/notify"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestNotifyReload: incident events reach the notify targets of the running config, a reload
// that adds a target sends the next events there too, and one that removes a target stops it.
func TestNotifyReload(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	hook := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			var g notify.Generic
			json.Unmarshal(b, &g)
			mu.Lock()
			got[name] = append(got[name], g.ID+":"+g.Event.Event)
			mu.Unlock()
		}))
	}
	a, b := hook("a"), hook("b")
	defer a.Close()
	defer b.Close()
	dir := t.TempDir()
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	yaml := func(targets string) string {
		return fmt.Sprintf(`site: test
node: n1
data_dir: %s
web: {listen: "%s"}
devices:
  - {id: leak, driver: sim.contact, poll: 1s}
notify:
  targets:
    - {name: a, type: webhook, url: %q}
    - {name: b, type: webhook, url: %q}
  routes:
    - {targets: [%s]}
`, dir, web, a.URL, b.URL, targets)
	}
	var cmu sync.Mutex
	next := yaml("a")
	load := func() (*config.Config, error) {
		cmu.Lock()
		defer cmu.Unlock()
		return config.Parse("test.yaml", []byte(next))
	}
	ready := make(chan *Site, 4)
	sv := NewSupervisor(load, Options{Version: "test", Ready: func(s *Site) { ready <- s }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	site := func() *Site {
		select {
		case s := <-ready:
			return s
		case <-time.After(60 * time.Second):
			t.Fatal("no site ready in 60 s")
		}
		return nil
	}
	count := func(name string) int { mu.Lock(); defer mu.Unlock(); return len(got[name]) }
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("timed out waiting for %s: %v", what, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	raise := func(s *Site, key string) {
		s.raise(incident.Raise{Key: key, Rule: key, Severity: "warning", Source: "system", Summary: key}, s.now())
	}
	s := site()
	raise(s, "one")
	wait("a gets the first incident", func() bool { return count("a") == 1 })

	cmu.Lock()
	next = yaml("a, b")
	cmu.Unlock()
	if err := sv.Reload(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	s = site()
	raise(s, "two")
	wait("a and b get the second incident", func() bool { return count("a") == 2 && count("b") == 1 })

	cmu.Lock()
	next = yaml("b")
	cmu.Unlock()
	if err := sv.Reload(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	s = site()
	raise(s, "three")
	wait("b gets the third incident", func() bool { return count("b") == 2 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got["a"]) != "[n1-1:opened n1-2:opened]" || fmt.Sprint(got["b"]) != "[n1-2:opened n1-3:opened]" {
		t.Errorf("got %v", got)
	}
}

// TestNotifyAuditTarget: a webhook with audit: true gets each audit record once, as
// {"type":"audit",...}; after a restart it goes on from where it stopped (no record again, none
// missed), and records written before the target existed are not sent to it.
func TestNotifyAuditTarget(t *testing.T) {
	var mu sync.Mutex
	var seqs []uint64
	var actions []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var a notify.AuditWebhook
		json.Unmarshal(b, &a)
		if a.Type != "audit" {
			return
		}
		mu.Lock()
		seqs = append(seqs, a.Seq)
		actions = append(actions, a.Action)
		mu.Unlock()
	}))
	defer hook.Close()
	dir := t.TempDir()
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	yaml := func(audit bool) string {
		return fmt.Sprintf(`site: test
node: n1
data_dir: %s
web: {listen: "%s"}
devices:
  - {id: leak, driver: sim.contact, poll: 1s}
notify:
  targets:
    - {name: siem, type: webhook, url: %q, audit: %v}
  routes:
    - {targets: [siem]}
`, dir, web, hook.URL, audit)
	}
	var cmu sync.Mutex
	next := yaml(false)
	load := func() (*config.Config, error) {
		cmu.Lock()
		defer cmu.Unlock()
		return config.Parse("test.yaml", []byte(next))
	}
	var cur *Site
	run := func() (reload func(), stop func()) {
		ready := make(chan *Site, 4)
		sv := NewSupervisor(load, Options{Version: "test", Ready: func(s *Site) { ready <- s }})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sv.Run(ctx) }()
		wait := func() {
			select {
			case cur = <-ready:
			case <-time.After(60 * time.Second):
				t.Fatal("no site ready in 60 s")
			}
		}
		wait()
		return func() {
				if err := sv.Reload(ctx, "test"); err != nil {
					t.Fatal(err)
				}
				wait()
			}, func() {
				cancel()
				<-done
			}
	}
	got := func() (int, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(seqs), fmt.Sprint(seqs, actions)
	}
	// waitN waits for n records, the last of them the trail's newest.
	waitN := func(n int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			k, s := got()
			newest, _ := cur.sh.audit.Records(1)
			mu.Lock()
			last := len(seqs) > 0 && len(newest) == 1 && seqs[len(seqs)-1] == newest[0].Seq
			mu.Unlock()
			if k >= n && last {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %d audit records at the webhook: %s", n, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	reload, stop := run()
	reload() // a record written while the target does not take audit records
	before, _ := cur.sh.audit.Records(1)
	if len(before) != 1 {
		t.Fatal("no audit record of the reload")
	}
	cmu.Lock()
	next = yaml(true)
	cmu.Unlock()
	reload() // whether this reload's own record is sent depends on when the target starts
	reload()
	waitN(1)
	stop()
	reload, stop = run()
	reload()
	waitN(2)
	stop()
	reload, stop = run()
	defer stop()
	reload()
	waitN(3)
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range seqs {
		if seq <= before[0].Seq || (i > 0 && seq != seqs[i-1]+1) {
			t.Fatalf("audit records at the webhook: seqs %v (want consecutive ones after %d, each once)", seqs, before[0].Seq)
		}
	}
	for _, a := range actions {
		if a != "config.reload" {
			t.Errorf("action %q, want config.reload", a)
		}
	}
}
