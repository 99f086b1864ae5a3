package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

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
			c.Action != "ack" && c.Action != "relay" && c.Action != "reload":
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
