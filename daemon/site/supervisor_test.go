package site

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestReloadRefused: a reload whose site cannot be built (a device that cannot be opened,
// another data_dir) is refused with the reason, the running site keeps serving from the same
// socket, and the config-reload-failed incident stays open until a reload succeeds.
func TestReloadRefused(t *testing.T) {
	dir := t.TempDir()
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	yaml := func(dataDir, extra string) string {
		return fmt.Sprintf(`site: test
node: n1
data_dir: %s
web: {listen: "%s"}
devices:
  - {id: leak, driver: sim.contact, poll: 100ms}
%s`, dataDir, web, extra)
	}
	var mu sync.Mutex
	crac := "  - {id: crac, driver: sim.relay, safe_state: \"off\"}\n"
	next := yaml(dir, crac)
	load := func() (*config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return config.Parse("test.yaml", []byte(next))
	}
	set := func(y string) { mu.Lock(); next = y; mu.Unlock() }
	ready := make(chan *Site, 4)
	sv := NewSupervisor(load, Options{Version: "test", Ready: func(s *Site) { ready <- s }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("supervisor: %v", err)
		}
	})
	var s *Site
	select {
	case s = <-ready:
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("site did not start in 30 s")
	}
	openReload := func() int {
		n := 0
		for _, in := range sv.sh.current().Incidents().OpenIncidents() {
			if in.Rule == "config-reload-failed" {
				n++
			}
		}
		return n
	}
	pageAnswers := func() error {
		resp, err := http.Get("http://" + web + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}

	for _, c := range []struct{ name, yaml, want string }{
		{"device", yaml(dir, crac+"  - {id: r2, driver: relay, pin: GPIO27}\n"), "device r2"},
		{"data_dir", yaml(t.TempDir(), crac), "data_dir cannot change"},
	} {
		set(c.yaml)
		err := sv.Reload(context.Background(), "test")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: reload: %v, want an error with %q", c.name, err, c.want)
		}
		if sv.sh.current() != s {
			t.Fatalf("%s: the running site was replaced by a refused reload", c.name)
		}
		if n := openReload(); n != 1 {
			t.Fatalf("%s: %d open config-reload-failed incidents, want 1", c.name, n)
		}
		if err := pageAnswers(); err != nil {
			t.Fatalf("%s: the page does not answer after a refused reload: %v", c.name, err)
		}
	}

	// A new device, and a changed relay (made at the swap, not beside the running one).
	set(yaml(dir, "  - {id: crac, driver: sim.relay, safe_state: \"on\"}\n  - {id: door, driver: sim.contact, poll: 100ms}\n"))
	if err := sv.Reload(context.Background(), "test"); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	s2 := <-ready
	if s2 == s || s2.Device("door") == nil {
		t.Fatal("the good reload did not take effect")
	}
	if s2.Device("leak") != s.Device("leak") {
		t.Error("an unchanged device was opened again instead of handed over")
	}
	if s2.Device("crac") == nil || s2.Device("crac") == s.Device("crac") {
		t.Error("the changed relay was not made anew")
	}
	if rs := s2.Status().Relays; len(rs) != 1 || rs[0].ID != "crac" {
		t.Errorf("relays after the reload: %+v", rs)
	}
	if n := openReload(); n != 0 {
		t.Errorf("%d open config-reload-failed incidents after a good reload", n)
	}
	if err := pageAnswers(); err != nil {
		t.Fatalf("the page does not answer after the reload: %v", err)
	}
}

// TestReloadsUnderLoad reloads a site again and again while its page is read, moving and
// keeping the NUT port and changing the trap receiver's settings on the same port (under the
// race detector: sites hand sockets, devices, receivers and the uplink to each other).
func TestReloadsUnderLoad(t *testing.T) {
	dir := t.TempDir()
	web := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	traps := fmt.Sprintf("127.0.0.1:%d", testpeer.FreeUDPPort(t))
	nuts := []int{testpeer.FreePort(t), testpeer.FreePort(t)}
	yaml := func(i int) string {
		return fmt.Sprintf(`site: test
node: n1
data_dir: %s
web: {listen: "%s"}
mqtt: {embedded_broker: "127.0.0.1:%d"}
nut: {listen: "127.0.0.1:%d"}
traps: {listen: "%s", communities: [c%d]}
devices:
  - {id: ups1, driver: sim.ups, poll: 50ms}
  - {id: crac, driver: sim.relay, poll: 50ms}
  - {id: leak, driver: sim.contact, poll: 50ms, values: {contact: %d}}
rules:
  - {name: leak, device: leak, metric: contact, equals: 1}
`, dir, web, testpeer.FreePort(t), nuts[i%2], traps, i, i%2)
	}
	var mu sync.Mutex
	i := 0
	load := func() (*config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return config.Parse("test.yaml", []byte(yaml(i)))
	}
	ready := make(chan *Site, 16)
	sv := NewSupervisor(load, Options{Version: "test", Ready: func(s *Site) { ready <- s }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("site did not start in 30 s")
	}
	readers := make(chan struct{})
	var failed sync.Map
	var wg sync.WaitGroup
	// A fresh connection per request: one kept alive across a reload may be closed by the
	// old server as the request goes out, as with any server restart.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-readers:
					return
				default:
				}
				resp, err := client.Get("http://" + web + "/api/v1/status")
				if err != nil {
					failed.Store(err.Error(), true)
					continue
				}
				resp.Body.Close()
			}
		}()
	}
	for n := 1; n <= 6; n++ {
		mu.Lock()
		i = n
		mu.Unlock()
		if err := sv.Reload(context.Background(), "test"); err != nil {
			t.Fatalf("reload %d: %v", n, err)
		}
		s := <-ready
		if got, want := s.NUTAddr().String(), fmt.Sprintf("127.0.0.1:%d", nuts[n%2]); got != want {
			t.Fatalf("reload %d: NUT on %s, want %s", n, got, want)
		}
		if s.TrapAddr() == nil {
			t.Fatalf("reload %d: no trap receiver", n)
		}
		testpeer.Eventually(t, 30*time.Second, "the leak rule following the new config", func() bool {
			return s.Incidents().IsOpen("leak") == (n%2 == 1)
		})
	}
	close(readers)
	wg.Wait()
	failed.Range(func(k, _ any) bool {
		t.Errorf("the page did not answer during a reload: %v", k)
		return true
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
