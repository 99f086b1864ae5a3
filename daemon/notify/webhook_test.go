package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T, dir string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "rw.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// receiver is a webhook endpoint that records the bodies it accepted, and refuses every
// request while down.
type receiver struct {
	mu     sync.Mutex
	down   bool
	bodies [][]byte
	sigs   []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	r.bodies = append(r.bodies, b)
	r.sigs = append(r.sigs, req.Header.Get(SignatureHeader))
}

func (r *receiver) setDown(d bool) { r.mu.Lock(); r.down = d; r.mu.Unlock() }

func (r *receiver) got() ([][]byte, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), append([]string(nil), r.sigs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stage(t *testing.T, db *bolt.DB, n *Notifier, evs ...Event) {
	t.Helper()
	for _, e := range evs {
		if err := db.Update(func(tx *bolt.Tx) error { return n.StageTx(tx, e) }); err != nil {
			t.Fatal(err)
		}
	}
}

func event(id, ev, sev string) Event {
	return Event{ID: id, Event: ev, Severity: sev, Rule: "leak", Device: "leak", Metric: "contact", Value: 1.0, Threshold: nil,
		OpenedAt: "2026-12-03T08:00:00.000Z", TS: "2026-12-03T08:00:01.000Z"}
}

func start(t *testing.T, db *bolt.DB, cfg Config) (*Notifier, func()) {
	t.Helper()
	cfg.ApplyDefaults()
	for _, tc := range cfg.Targets {
		if err := CheckTarget(tc); err != nil {
			t.Fatal(err)
		}
	}
	n, err := New(db, cfg, Options{Site: "dc1", Node: "rack12", MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n, func() { cancel(); n.Wait() }
}

func TestWebhookShapes(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	keyFile := filepath.Join(dir, "pdkey")
	os.WriteFile(keyFile, []byte("R0UTINGKEY"), 0o600)
	recv := map[string]*receiver{}
	var targets []Target
	for _, f := range Formats {
		r := &receiver{}
		srv := httptest.NewServer(r)
		defer srv.Close()
		recv[f] = r
		targets = append(targets, Target{Name: f, Type: "webhook", URL: srv.URL + "/hook", Format: f, SecretFile: secret, RoutingKeyFile: keyFile})
	}
	db := openDB(t, dir)
	defer db.Close()
	n, stop := start(t, db, Config{Targets: targets, Routes: []Route{{Targets: Formats}}, PageURL: "http://rack12.example:8080/"})
	defer stop()
	ack := event("rack12-7", Acknowledged, "critical")
	ack.By = "alice"
	stage(t, db, n, event("rack12-7", Opened, "critical"), ack, event("rack12-7", Resolved, "critical"))
	for _, f := range Formats {
		waitFor(t, f+" receives 3 events", func() bool { b, _ := recv[f].got(); return len(b) == 3 })
	}

	check := func(f string, i int) map[string]any {
		bodies, sigs := recv[f].got()
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(bodies[i])
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); sigs[i] != want {
			t.Errorf("%s body %d: signature %q, want %q", f, i, sigs[i], want)
		}
		var m map[string]any
		if err := json.Unmarshal(bodies[i], &m); err != nil {
			t.Fatalf("%s body %d: %v", f, i, err)
		}
		return m
	}
	for i, want := range []struct{ event, state, pd string }{{"opened", "firing", "trigger"}, {"acknowledged", "firing", "acknowledge"}, {"resolved", "resolved", "resolve"}} {
		g := check("generic", i)
		if g["event"] != want.event || g["state"] != want.state || g["key"] != "dc1/rack12/rack12-7" || g["site"] != "dc1" ||
			g["node"] != "rack12" || g["id"] != "rack12-7" || g["severity"] != "critical" || g["device"] != "leak" {
			t.Errorf("generic %d: %v", i, g)
		}
		a := check("alertmanager", i)
		alerts, _ := a["alerts"].([]any)
		if a["version"] != "4" || a["status"] != want.state || a["groupKey"] != "dc1/rack12/rack12-7" || len(alerts) != 1 {
			t.Fatalf("alertmanager %d: %v", i, a)
		}
		al := alerts[0].(map[string]any)
		labels := al["labels"].(map[string]any)
		if al["status"] != want.state || labels["alertname"] != "leak" || labels["severity"] != "critical" || al["startsAt"] != "2026-12-03T08:00:00.000Z" || al["fingerprint"] == "" {
			t.Errorf("alertmanager %d alert: %v", i, al)
		}
		p := check("pagerduty", i)
		pl, _ := p["payload"].(map[string]any)
		if p["event_action"] != want.pd || p["dedup_key"] != "dc1/rack12/rack12-7" || p["routing_key"] != "R0UTINGKEY" || pl == nil ||
			pl["severity"] != "critical" || pl["source"] != "dc1/rack12" || pl["summary"] == "" {
			t.Errorf("pagerduty %d: %v", i, p)
		}
	}
	waitFor(t, "every queue empty", func() bool {
		for _, st := range n.Stats() {
			if st.Sent != 3 || st.Queued != 0 || st.Failed != 0 {
				return false
			}
		}
		return true
	})
}

// TestDownTargetGetsAllInOrder: a target that is down when incidents open gets every event
// once it is back, in order, across a restart of the notifier, while a healthy target is not
// held up.
func TestDownTargetGetsAllInOrder(t *testing.T) {
	dir := t.TempDir()
	down, up := &receiver{down: true}, &receiver{}
	sd, su := httptest.NewServer(down), httptest.NewServer(up)
	defer sd.Close()
	defer su.Close()
	cfg := Config{Targets: []Target{{Name: "down", Type: "webhook", URL: sd.URL}, {Name: "up", Type: "webhook", URL: su.URL}},
		Routes: []Route{{Targets: []string{"down", "up"}}}}
	db := openDB(t, dir)
	n, stop := start(t, db, cfg)
	var evs []Event
	for i := range 5 {
		evs = append(evs, event(fmt.Sprintf("rack12-%d", i+1), Opened, "warning"))
	}
	stage(t, db, n, evs[:3]...)
	waitFor(t, "the healthy target's 3 events", func() bool { b, _ := up.got(); return len(b) == 3 })
	waitFor(t, "failed attempts on the dead target", func() bool { return n.Stats()[0].Failed >= 2 })
	if q := n.Stats()[0].Queued; q != 3 {
		t.Fatalf("dead target queue: %d, want 3", q)
	}
	stop()
	db.Close()

	// Restart: the queue is on disk.
	db = openDB(t, dir)
	defer db.Close()
	n, stop = start(t, db, cfg)
	if q := n.Stats()[0].Queued; q != 3 {
		t.Fatalf("after restart the dead target's queue holds %d, want 3", q)
	}
	stage(t, db, n, evs[3:]...)
	stop()
	// A target taken out of the config takes its queue with it; the others keep theirs.
	gone := cfg
	gone.Targets = append(append([]Target(nil), cfg.Targets...), Target{Name: "gone", Type: "webhook", URL: sd.URL})
	gone.Routes = []Route{{Targets: []string{"down", "up", "gone"}}}
	n, stop = start(t, db, gone)
	stage(t, db, n, event("rack12-x", Opened, "warning"))
	stop()
	n, stop = start(t, db, cfg)
	defer stop()
	for _, st := range n.Stats() {
		if st.Target == "down" && st.Queued != 6 {
			t.Fatalf("down holds %d, want 6", st.Queued)
		}
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(queueBucket("gone")) != nil {
			t.Error("the queue of a target no longer configured was kept")
		}
		return nil
	})
	evs = append(evs, event("rack12-x", Opened, "warning"))
	down.setDown(false)
	waitFor(t, "the revived target's 6 events", func() bool { b, _ := down.got(); return len(b) >= 6 && n.Stats()[0].Queued == 0 })
	bodies, _ := down.got()
	var ids []string
	for _, b := range bodies {
		var g Generic
		json.Unmarshal(b, &g)
		if len(ids) == 0 || ids[len(ids)-1] != g.ID { // at least once: a repeat of the last is allowed
			ids = append(ids, g.ID)
		}
	}
	if fmt.Sprint(ids) != "[rack12-1 rack12-2 rack12-3 rack12-4 rack12-5 rack12-x]" {
		t.Fatalf("revived target got %v, want the six in order", ids)
	}
}

// TestWebhookHugeEvent: an event whose free text would make the body too large is cut to fit
// rather than retried for ever.
func TestWebhookHugeEvent(t *testing.T) {
	r := &receiver{}
	srv := httptest.NewServer(r)
	defer srv.Close()
	db := openDB(t, t.TempDir())
	defer db.Close()
	n, stop := start(t, db, Config{Targets: []Target{{Name: "h", Type: "webhook", URL: srv.URL}}, Routes: []Route{{Targets: []string{"h"}}}})
	defer stop()
	e := event("rack12-1", Opened, "warning")
	e.Note = strings.Repeat("é", MaxRequest)
	e.Value = strings.Repeat("v", MaxRequest)
	stage(t, db, n, e)
	waitFor(t, "the cut event", func() bool { b, _ := r.got(); return len(b) == 1 })
	b, _ := r.got()
	if len(b[0]) > MaxRequest {
		t.Errorf("body of %d bytes", len(b[0]))
	}
}
