package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestRelayCommandsInOrder: two relay commands sent back to back on R/cmd (one mosquitto_pub
// connection, no wait between them) leave the relay in the second one's state, 20 rounds out
// of 20, on/off and off/on in turn; each reply says ok.
func TestRelayCommandsInOrder(t *testing.T) {
	pub := testpeer.Require(t, "mosquitto_pub", "mosquitto-clients")
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/test/rack1/cmd/reply", "")
	bin := buildDaemon(t)
	dir := t.TempDir()
	webPort := testpeer.FreePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: test
node: rack1
data_dir: %s/data
web: {listen: "127.0.0.1:%d"}
mqtt: {brokers: ["%s"]}
devices:
  - {id: genset, driver: sim.relay, safe_state: "off"}
`, dir, webPort, m.URL))
	startDaemon(t, bin, cfg)
	statusURL := fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", webPort)
	var st struct {
		Uplink struct {
			Connected bool `json:"connected"`
		} `json:"uplink"`
		Relays []struct {
			ID   string `json:"id"`
			On   bool   `json:"on"`
			Mode string `json:"mode"`
		} `json:"relays"`
	}
	testpeer.Eventually(t, 30*time.Second, "the daemon connected to mosquitto", func() bool {
		return getJSON(statusURL, &st) == nil && st.Uplink.Connected
	})

	const rounds = 20
	wrong := 0
	for i := range rounds {
		first, second := "on", "off"
		if i%2 == 1 {
			first, second = "off", "on"
		}
		line := func(n int, state string) string {
			return fmt.Sprintf(`{"id":"r%d-%d","action":"relay","device":"genset","state":"%s"}`, i, n, state)
		}
		p := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", "rackwatch/test/rack1/cmd", "-l")
		p.Stdin = strings.NewReader(line(1, first) + "\n" + line(2, second) + "\n")
		if out, err := p.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		// A reply is published once its command was applied: after both, the relay is final.
		testpeer.Eventually(t, 30*time.Second, fmt.Sprintf("round %d: both replies", i), func() bool {
			return len(sub.Matching("/cmd/reply", fmt.Sprintf(`"id":"r%d-`, i))) == 2
		})
		if n := len(sub.Matching("/cmd/reply", fmt.Sprintf(`"id":"r%d-`, i), `"ok":true`)); n != 2 {
			t.Fatalf("round %d: replies %q", i, sub.Matching("/cmd/reply", fmt.Sprintf(`"id":"r%d-`, i)))
		}
		if err := getJSON(statusURL, &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Relays) != 1 || st.Relays[0].ID != "genset" {
			t.Fatalf("relays in the status: %+v", st.Relays)
		}
		if r := st.Relays[0]; r.Mode != second || r.On != (second == "on") {
			wrong++
			t.Errorf("round %d: %s then %s left the relay mode %s, on=%v", i, first, second, r.Mode, r.On)
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d rounds ended in the first command's state", wrong, rounds)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", webPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`rackwatch_uplink_commands_total{outcome="ok"} %d`, 2*rounds),
		`rackwatch_uplink_commands_total{outcome="busy"} 0`,
		`rackwatch_uplink_command_replies_dropped_total 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
