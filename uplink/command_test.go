package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

var commandCases = []struct {
	name, payload string
	want          Command // zero when refused
	err           string  // part of the refusal
}{
	{"ack", `{"id":"c1","action":"ack","incident":"inc-7"}`, Command{ID: "c1", Action: "ack", Incident: "inc-7"}, ""},
	{"relay", `{"id":"c2","action":"relay","device":"genset","state":"auto"}`, Command{ID: "c2", Action: "relay", Device: "genset", State: "auto"}, ""},
	{"reload", ` {"id":"c3","action":"reload"} `, Command{ID: "c3", Action: "reload"}, ""},
	{"update", `{"id":"c4","action":"update","url":"https://fw.example/x.update","sha256":"ab"}`, Command{ID: "c4", Action: "update", URL: "https://fw.example/x.update", SHA256: "ab"}, ""},
	{"update without sha256", `{"id":"m14","action":"update","url":"https://fw.example/x.update"}`, Command{}, `needs "url" and "sha256"`},
	{"reload with url", `{"id":"m15","action":"reload","url":"https://x"}`, Command{}, `"url" not allowed`},
	{"malformed", `{"id":"m1","action":"ack",`, Command{}, "malformed"},
	{"not an object", `["ack"]`, Command{}, "malformed"},
	{"wrong type", `{"id":7,"action":"reload"}`, Command{}, "malformed"},
	{"trailing", `{"id":"m2","action":"reload"} {}`, Command{}, "after the JSON object"},
	{"unknown field", `{"id":"m3","action":"reload","force":true}`, Command{}, `unknown field "force"`},
	{"unknown action", `{"id":"m4","action":"format-disk"}`, Command{}, `unknown action "format-disk"`},
	{"no action", `{"id":"m5"}`, Command{}, `missing "action"`},
	{"no id", `{"action":"reload"}`, Command{}, `missing "id"`},
	{"ack without incident", `{"id":"m6","action":"ack"}`, Command{}, `needs "incident"`},
	{"ack with device", `{"id":"m7","action":"ack","incident":"i","device":"genset"}`, Command{}, `"device" not allowed`},
	{"relay bad state", `{"id":"m8","action":"relay","device":"genset","state":"maybe"}`, Command{}, `on, off or auto`},
	{"relay without device", `{"id":"m9","action":"relay","state":"on"}`, Command{}, `needs "device"`},
	{"reload with state", `{"id":"m10","action":"reload","state":"on"}`, Command{}, `"state" not allowed`},
	{"oversized", `{"id":"m11","action":"ack","incident":"` + strings.Repeat("x", MaxCommandBytes) + `"}`, Command{}, "exceeds the limit"},
	{"wrong case", `{"ID":"m12","action":"reload"}`, Command{}, `unknown field "ID"`},
	{"duplicate", `{"id":"m13","action":"reload","action":"ack"}`, Command{}, `"action" given twice`},
	{"long id", `{"id":"` + strings.Repeat("i", 129) + `","action":"reload"}`, Command{}, "longer than 128"},
}

func TestParseCommand(t *testing.T) {
	for _, c := range commandCases {
		got, err := parseCommand([]byte(c.payload))
		if c.err == "" {
			if err != nil || got != c.want {
				t.Errorf("%s: got %+v, %v; want %+v", c.name, got, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.err)
		}
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, c := range commandCases {
		f.Add([]byte(c.payload))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCommand(b)
		if err != nil {
			return
		}
		// Whatever passes is a complete, known command and survives a round trip.
		switch {
		case c.ID == "" || len(b) > MaxCommandBytes:
			t.Fatalf("accepted %q as %+v", b, c)
		case c.Action == "ack" && (c.Incident == "" || c.Device != "" || c.State != ""),
			c.Action == "relay" && (c.Device == "" || c.Incident != "" || (c.State != "on" && c.State != "off" && c.State != "auto")),
			c.Action == "reload" && (c.Incident != "" || c.Device != "" || c.State != ""),
			c.Action == "update" && (c.URL == "" || c.SHA256 == "" || c.Incident != "" || c.Device != "" || c.State != ""),
			c.Action != "update" && (c.URL != "" || c.SHA256 != ""),
			c.Action != "ack" && c.Action != "relay" && c.Action != "reload" && c.Action != "update":
			t.Fatalf("accepted an invalid command %q as %+v", b, c)
		}
		again, _ := json.Marshal(c)
		if c2, err := parseCommand(again); err != nil || c2 != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, c2, err)
		}
	})
}

// TestCommands sends every case through a real mosquitto with mosquitto_pub: valid commands
// reach the handler and get ok:true (or ok:false with the handler's error); every refused one
// gets ok:false with the reason and never reaches the handler.
func TestCommands(t *testing.T) {
	pub := testpeer.Require(t, "mosquitto_pub", "mosquitto-clients")
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/cmd/reply", "")
	db := tempDB(t)
	u := start(t, db, testOptions(m.URL))
	var (
		mu  sync.Mutex
		got []Command
	)
	u.OnCommand(func(ctx context.Context, c Command) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c)
		if c.Action == "relay" && c.Device == "nosuch" {
			return errors.New("no relay named nosuch")
		}
		return nil
	})
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })

	var want []Command
	for i, c := range commandCases {
		cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", root+"/cmd", "-s")
		cmd.Stdin = strings.NewReader(c.payload)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		if c.err == "" {
			want = append(want, c.want)
		}
		// Replies come in order: wait for this one before the next.
		testpeer.Eventually(t, 20*time.Second, "reply to "+c.name, func() bool { return len(sub.Lines()) > i })
		var r struct {
			ID    *string `json:"id"`
			OK    *bool   `json:"ok"`
			Error string  `json:"error"`
		}
		line := sub.Lines()[i]
		_, payload, _ := strings.Cut(line, " ")
		if err := json.Unmarshal([]byte(payload), &r); err != nil || r.ID == nil || r.OK == nil {
			t.Fatalf("%s: reply %q: %v", c.name, payload, err)
		}
		if *r.OK != (c.err == "") || (c.err != "" && !strings.Contains(r.Error, c.err)) || (c.err == "" && r.Error != "") {
			t.Errorf("%s: reply %s, want ok=%v error ~%q", c.name, payload, c.err == "", c.err)
		}
		if c.want.ID != "" && *r.ID != c.want.ID {
			t.Errorf("%s: reply id %q", c.name, *r.ID)
		}
	}
	// A handler error is an ok:false with its text.
	cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", root+"/cmd", "-s")
	cmd.Stdin = strings.NewReader(`{"id":"h1","action":"relay","device":"nosuch","state":"on"}`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	want = append(want, Command{ID: "h1", Action: "relay", Device: "nosuch", State: "on"})
	testpeer.Eventually(t, 20*time.Second, "handler error reply", func() bool {
		return len(sub.Matching(root+"/cmd/reply", `"id":"h1","ok":false,"error":"no relay named nosuch"`)) == 1
	})
	// The same command id again (as a QoS 1 redelivery would bring it): same reply, not run.
	cmd = exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", root+"/cmd", "-s")
	cmd.Stdin = strings.NewReader(commandCases[0].payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	testpeer.Eventually(t, 20*time.Second, "reply to the repeated command", func() bool {
		return len(sub.Matching(root+"/cmd/reply", `"id":"c1","ok":true`)) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handler saw %+v\nwant %+v", got, want)
	}
}

// pubLines publishes each line as one QoS 1 message on R/cmd, back to back on one
// connection (mosquitto_pub -l).
func pubLines(t *testing.T, m *testpeer.Mosquitto, lines ...string) {
	t.Helper()
	pub := testpeer.Require(t, "mosquitto_pub", "mosquitto-clients")
	cmd := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", root+"/cmd", "-l")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
}

// replyIDs returns the ids of the replies the subscriber saw, in arrival order.
func replyIDs(t *testing.T, sub *testpeer.Sub) []string {
	var ids []string
	for _, p := range sub.Matching(root + "/cmd/reply") {
		var r reply
		if err := json.Unmarshal([]byte(p), &r); err != nil {
			t.Fatalf("reply %q: %v", p, err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// TestCommandsInOrder: commands sent back to back reach the handler one at a time in the
// order sent, and their replies go out in that order; a repeated id gets the first reply
// even when the repeat comes before the first was applied.
func TestCommandsInOrder(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/cmd/reply", "")
	u := start(t, tempDB(t), testOptions(m.URL))
	var (
		mu      sync.Mutex
		got     []string
		running int
	)
	u.OnCommand(func(ctx context.Context, c Command) error {
		mu.Lock()
		running++
		if running > 1 {
			t.Errorf("%d commands applied at once", running)
		}
		got = append(got, c.ID)
		mu.Unlock()
		time.Sleep(time.Millisecond) // gives a racing second command time to start
		mu.Lock()
		running--
		mu.Unlock()
		if c.Device == "nosuch" {
			return errors.New("no relay named nosuch")
		}
		return nil
	})
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })

	const n = 40
	var lines, want []string
	for i := range n {
		state := []string{"on", "off"}[i%2]
		lines = append(lines, fmt.Sprintf(`{"id":"o%d","action":"relay","device":"genset","state":"%s"}`, i, state))
		want = append(want, fmt.Sprintf("o%d", i))
	}
	pubLines(t, m, lines...)
	testpeer.Eventually(t, 30*time.Second, "every reply", func() bool { return len(sub.Matching("/cmd/reply")) >= n })
	mu.Lock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handler saw %v\nwant %v", got, want)
	}
	mu.Unlock()
	if ids := replyIDs(t, sub); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("replies %v\nwant %v", ids, want)
	}

	// The same id twice back to back, the first failing: both get the first's reply and
	// the handler sees it once.
	pubLines(t, m,
		`{"id":"d1","action":"relay","device":"nosuch","state":"on"}`,
		`{"id":"d1","action":"relay","device":"genset","state":"off"}`)
	testpeer.Eventually(t, 30*time.Second, "both replies to d1", func() bool {
		return len(sub.Matching("/cmd/reply", `"id":"d1"`)) == 2
	})
	for _, p := range sub.Matching("/cmd/reply", `"id":"d1"`) {
		if p != `{"id":"d1","ok":false,"error":"no relay named nosuch"}` {
			t.Errorf("reply to d1: %s", p)
		}
	}
	mu.Lock()
	if last := got[len(got)-1]; len(got) != n+1 || last != "d1" {
		t.Errorf("handler saw %d commands, the last %q; want %d, d1", len(got), last, n+1)
	}
	mu.Unlock()
	if c := u.Status().Commands; c.OK != n || c.Failed != 1 || c.Repeated != 1 || c.Busy != 0 {
		t.Errorf("counts %+v", c)
	}
}

// TestSlowCommand: while the handler is stuck on a command, the uplink still publishes and
// takes its PUBACKs, further commands wait their turn, and past the queue's bound they are
// refused "busy" at once, with a count; once the handler returns the queued ones run in order.
func TestSlowCommand(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "")
	o := testOptions(m.URL)
	o.CommandQueue = 3
	u := start(t, tempDB(t), o)
	entered, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}) // before Run is stopped: Run waits for the handler
	var (
		mu  sync.Mutex
		got []string
	)
	u.OnCommand(func(ctx context.Context, c Command) error {
		mu.Lock()
		got = append(got, c.ID)
		mu.Unlock()
		if c.ID == "slow" {
			close(entered)
			<-release
		}
		return nil
	})
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })

	pubLines(t, m, `{"id":"slow","action":"reload"}`)
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow command did not reach the handler")
	}
	// Thirty more arrive while the handler is stuck: three fill the queue, the others are
	// refused at once. Were paho's router the one waiting for room, the commands behind it
	// would stall paho's reader, and the PUBACK below would never be read; were the commands'
	// own PUBACKs held back, mosquitto would stop at its 20 in flight and never send them all.
	const n = 30
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"id":"q%d","action":"reload"}`, i))
	}
	pubLines(t, m, lines...)
	testpeer.Eventually(t, 30*time.Second, "the queue full", func() bool { return len(u.cmdq) == 3 })
	before := u.Status().Published
	if err := u.Incident(Incident{ID: "inc-1", Event: "opened", Severity: "warning", Rule: "r"}); err != nil {
		t.Fatal(err)
	}
	testpeer.Eventually(t, 30*time.Second, "the incident acknowledged by the broker", func() bool {
		st := u.Status()
		return st.Published > before && st.Incidents == 0
	})
	testpeer.Eventually(t, 30*time.Second, "every command past the queue refused busy", func() bool {
		return u.Status().Commands.Busy == n-3
	})
	// Replies to refusals are bounded too: each busy command is answered or counted.
	testpeer.Eventually(t, 30*time.Second, "a busy reply to each, or a dropped count", func() bool {
		busy := sub.Matching("/cmd/reply", `"ok":false`, `"error":"busy: 3 commands already waiting`)
		return uint64(len(busy))+u.Status().Commands.RepliesDropped == n-3
	})
	if c := u.Status().Commands; c.OK != 0 || c.Refused != 0 {
		t.Errorf("counts while stuck %+v", c)
	}
	for i := range 3 {
		if r := sub.Matching("/cmd/reply", fmt.Sprintf(`"id":"q%d"`, i)); len(r) != 0 {
			t.Errorf("queued q%d answered before it ran: %v", i, r)
		}
	}
	close(release)
	testpeer.Eventually(t, 30*time.Second, "the queued commands applied", func() bool {
		return len(sub.Matching("/cmd/reply", `"ok":true`)) == 4
	})
	mu.Lock()
	if fmt.Sprint(got) != "[slow q0 q1 q2]" {
		t.Errorf("handler saw %v, want [slow q0 q1 q2]", got)
	}
	mu.Unlock()
	if c := u.Status().Commands; c.OK != 4 || c.Busy != n-3 {
		t.Errorf("counts %+v", c)
	}
	// A busy id is not remembered: sent again, it runs.
	pubLines(t, m, `{"id":"q29","action":"reload"}`)
	testpeer.Eventually(t, 30*time.Second, "q29 applied when sent again", func() bool {
		return len(sub.Matching("/cmd/reply", `"id":"q29","ok":true`)) == 1
	})
}

// TestCommandStoppedByRun: a command running when Run is stopped sees its ctx end, and its
// reply still goes out before offline; the one queued behind it is not run, but answered
// before offline too, and counted abandoned.
func TestCommandStoppedByRun(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/#", "")
	u := start(t, tempDB(t), testOptions(m.URL))
	entered := make(chan struct{})
	u.OnCommand(func(ctx context.Context, c Command) error {
		close(entered)
		<-ctx.Done()
		return errors.New("stopped before the reload was done")
	})
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	pubLines(t, m, `{"id":"s1","action":"reload"}`, `{"id":"s2","action":"reload"}`)
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not reach the handler")
	}
	testpeer.Eventually(t, 30*time.Second, "s2 queued", func() bool { return len(u.cmdq) == 1 })
	u.stop(t)
	testpeer.Eventually(t, 30*time.Second, "offline", func() bool { return len(sub.Matching("/state", `"offline"`)) > 0 })
	var order []string
	for _, l := range sub.Lines() {
		switch {
		case strings.Contains(l, `"id":"s1","ok":false,"error":"stopped before the reload was done"`):
			order = append(order, "reply")
		case strings.Contains(l, `"id":"s2","ok":false,"error":"not run: the uplink is stopping; send it again"`):
			order = append(order, "not run")
		case strings.HasPrefix(l, root+"/state ") && strings.Contains(l, `"offline"`):
			order = append(order, "offline")
		}
	}
	if fmt.Sprint(order) != "[reply not run offline]" {
		t.Errorf("reply and offline in the order %v; messages %q", order, sub.Lines())
	}
	if c := u.Status().Commands; c.Failed != 1 || c.Abandoned != 1 {
		t.Errorf("counts %+v", c)
	}
}

// TestRepliesRemembered: the first reply to an id survives a restart of the uplink (a new
// Uplink on the same database), and only the last 256 ids are kept, on disk too.
func TestRepliesRemembered(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/cmd/reply", "")
	db := tempDB(t)
	var (
		mu  sync.Mutex
		got []string
	)
	handler := func(ctx context.Context, c Command) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c.ID)
		if len(got) == 1 {
			return errors.New("first run fails")
		}
		return nil
	}
	u := start(t, db, testOptions(m.URL))
	u.OnCommand(handler)
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	pubLines(t, m, `{"id":"p1","action":"reload"}`)
	testpeer.Eventually(t, 30*time.Second, "the reply to p1", func() bool { return len(sub.Matching("/cmd/reply")) == 1 })
	u.stop(t)

	u = start(t, db, testOptions(m.URL))
	u.OnCommand(handler)
	testpeer.Eventually(t, 20*time.Second, "connected again", func() bool { return u.Status().Connected })
	pubLines(t, m, `{"id":"p1","action":"reload"}`)
	testpeer.Eventually(t, 30*time.Second, "the reply to p1 again", func() bool { return len(sub.Matching("/cmd/reply")) == 2 })
	for _, p := range sub.Matching("/cmd/reply") {
		if p != `{"id":"p1","ok":false,"error":"first run fails"}` {
			t.Errorf("reply %s", p)
		}
	}
	mu.Lock()
	if len(got) != 1 {
		t.Errorf("handler ran %v", got)
	}
	mu.Unlock()
	u.stop(t)

	// Past 256 ids the oldest go, from memory and from the bucket.
	u2, err := New(db, testOptions(m.URL))
	if err != nil {
		t.Fatal(err)
	}
	u2.loadRecent()
	for i := range 300 {
		u2.remember(reply{ID: fmt.Sprintf("e%d", i), OK: true})
	}
	db.View(func(tx *bbolt.Tx) error {
		if n := tx.Bucket(repliesBucket).Stats().KeyN; n != rememberCommands {
			t.Errorf("%d records in %s, want %d", n, repliesBucket, rememberCommands)
		}
		return nil
	})
	u3, err := New(db, testOptions(m.URL))
	if err != nil {
		t.Fatal(err)
	}
	u3.loadRecent()
	for i := range 300 {
		_, ok := u3.recent.get(fmt.Sprintf("e%d", i))
		if ok != (i >= 300-rememberCommands) {
			t.Errorf("e%d remembered: %v", i, ok)
		}
	}
	if _, ok := u3.recent.get("p1"); ok {
		t.Error("p1 still remembered after 300 newer ids")
	}
}

// TestRefusalFlood: a flood of invalid commands is answered (or the unsent replies counted),
// logged at most once a second, and does not stand in the way of a valid command.
func TestRefusalFlood(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/cmd/reply", "")
	var logs testpeer.Buffer
	o := testOptions(m.URL)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	u := start(t, tempDB(t), o)
	u.OnCommand(func(ctx context.Context, c Command) error { return nil })
	testpeer.Eventually(t, 20*time.Second, "connected", func() bool { return u.Status().Connected })
	const n = 200
	began := time.Now()
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"id":"g%d","action":"format-disk"}`, i))
	}
	pubLines(t, m, lines...)
	testpeer.Eventually(t, 30*time.Second, "every invalid command refused", func() bool { return u.Status().Commands.Refused == n })
	took := time.Since(began)
	testpeer.Eventually(t, 30*time.Second, "a reply to each, or a dropped count", func() bool {
		return uint64(len(sub.Matching("/cmd/reply", `unknown action`)))+u.Status().Commands.RepliesDropped == n
	})
	if got, most := strings.Count(logs.String(), `msg="command refused"`), 1+int(took/time.Second); got < 1 || got > most {
		t.Errorf("%d log lines for %d refusals in %v, want 1 to %d", got, n, took.Round(time.Millisecond), most)
	}
	pubLines(t, m, `{"id":"v1","action":"reload"}`)
	testpeer.Eventually(t, 30*time.Second, "the valid command after the flood", func() bool {
		return len(sub.Matching("/cmd/reply", `"id":"v1","ok":true`)) == 1
	})
}
