package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

type auditRec struct {
	Seq    uint64 `json:"seq"`
	TS     string `json:"ts"`
	Actor  string `json:"actor"`
	Source string `json:"source"`
	Action string `json:"action"`
	Target string `json:"target"`
	Detail string `json:"detail"`
	Hash   string `json:"hash"`
}

func findAudit(recs []auditRec, action string) (auditRec, bool) {
	for _, r := range recs {
		if r.Action == action {
			return r, true
		}
	}
	return auditRec{}, false
}

// webDo sends an HTTP request as an API client with Basic credentials.
func webDo(t *testing.T, method, url, user, pass, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.SetBasicAuth(user, pass)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// verifyAuditCmd runs rackwatch -config cfg -verify-audit.
func verifyAuditCmd(t *testing.T, bin, cfg string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, "-config", cfg, "-verify-audit")
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// TestAuditTrail: an acknowledgement over the web, a relay forced over MQTT and a reload by
// SIGHUP are each an audit record with its actor (on /api/v1/audit and R/audit), a failed
// login is one with the client's address; -verify-audit refuses the running daemon's locked
// database and says how to get a copy, passes the copy taken through /api/v1/backup, and
// names the record edited in it.
func TestAuditTrail(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/#", "")
	bin := buildDaemon(t)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	webPort := testpeer.FreePort(t)
	site := func(dataDir, extra string) string {
		return fmt.Sprintf(`site: test
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:%d", users_file: %s}
mqtt: {brokers: ["%s"]}
devices:
  - {id: crac, driver: sim.relay, safe_state: "off", poll: 200ms}
  - {id: leak, driver: sim.contact, poll: 200ms, values: {contact: 1}}
rules:
  - {name: leak, device: leak, metric: contact, equals: 1}
%s`, dataDir, webPort, users, m.URL, extra)
	}
	cfg := writeConfig(t, dir, site(filepath.Join(dir, "data"), ""))
	d := startDaemon(t, bin, cfg)
	base := fmt.Sprintf("http://127.0.0.1:%d", webPort)

	var leakID string
	testpeer.Eventually(t, 60*time.Second, "the leak incident and the uplink", func() bool {
		in, err := incidents(fmt.Sprintf("127.0.0.1:%d", webPort), "open")
		if err != nil || len(sub.Matching("/state", `"online"`)) == 0 {
			return false
		}
		for _, i := range in {
			if i["rule"] == "leak" {
				leakID, _ = i["id"].(string)
			}
		}
		return leakID != ""
	})

	// A failed login, then the acknowledgement over the web.
	if code, _ := webDo(t, "POST", base+"/api/v1/incidents/"+leakID+"/ack", "alice", "wrong", ""); code != http.StatusUnauthorized {
		t.Fatalf("ack with a wrong password: %d, want 401", code)
	}
	if code, b := webDo(t, "POST", base+"/api/v1/incidents/"+leakID+"/ack", "alice", "pw", ""); code != http.StatusOK {
		t.Fatalf("ack: %d %s", code, b)
	}
	// The relay forced over MQTT.
	c := mqttClient(t, m.URL)
	if r := command(t, c, sub, "force-1", `"action":"relay","device":"crac","state":"on"`); r["ok"] != true {
		t.Fatalf("relay command: %v", r)
	}
	// Refused commands: not a command at all, and one that fails.
	if r := command(t, c, sub, "bad-1", `"action":"explode"`); r["ok"] != false {
		t.Fatalf("unknown action: %v", r)
	}
	if r := command(t, c, sub, "bad-2", `"action":"relay","device":"nope","state":"on"`); r["ok"] != false {
		t.Fatalf("unknown relay: %v", r)
	}
	// The reload, by SIGHUP, of a changed file.
	d.write(site(filepath.Join(dir, "data"), "# reloaded\n"))
	sum := sha256.Sum256([]byte(site(filepath.Join(dir, "data"), "# reloaded\n")))
	d.signal(syscall.SIGHUP)

	var recs []auditRec
	testpeer.Eventually(t, 60*time.Second, "the reload's audit record", func() bool {
		if getJSON(base+"/api/v1/audit?limit=100", &recs) != nil {
			return false
		}
		_, ok := findAudit(recs, "config.reload")
		return ok
	})
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq >= recs[i-1].Seq {
			t.Fatalf("/api/v1/audit is not newest first: %+v", recs)
		}
	}
	checks := []struct {
		action, actor, source, target, detail string
	}{
		{"login.failed", "alice", "web", "127.0.0.1", "127.0.0.1"},
		{"incident.ack", "alice", "web", leakID, "leak"},
		{"relay.set", "mqtt:force-1", "mqtt", "crac", "on"},
		{"config.reload", "signal:SIGHUP", "config", cfg, hex.EncodeToString(sum[:])},
	}
	byAction := map[string]auditRec{}
	for _, want := range checks {
		r, ok := findAudit(recs, want.action)
		if !ok {
			t.Errorf("no %s record in %+v", want.action, recs)
			continue
		}
		byAction[want.action] = r
		if r.Actor != want.actor || r.Source != want.source || r.Target != want.target || !strings.Contains(r.Detail, want.detail) || len(r.Hash) != 64 {
			t.Errorf("%s record: %+v, want actor %s, source %s, target %s, detail with %s", want.action, r, want.actor, want.source, want.target, want.detail)
		}
	}
	refused := map[string]bool{}
	for _, r := range recs {
		if r.Action == "command.refused" && r.Source == "mqtt" {
			refused[r.Actor] = true
		}
	}
	if !refused["mqtt:bad-1"] || !refused["mqtt:bad-2"] {
		t.Errorf("refused commands not in the trail: %+v", recs)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Each record goes out on R/audit on its own, with its seq.
	testpeer.Eventually(t, 60*time.Second, "the records on R/audit", func() bool {
		for _, r := range byAction {
			if len(sub.Matching("rackwatch/test/rack1/audit", fmt.Sprintf(`"seq":%d,`, r.Seq), `"hash":"`+r.Hash+`"`)) != 1 {
				return false
			}
		}
		return true
	})

	// The running daemon holds the database: -verify-audit says how to check a copy.
	if code, out := verifyAuditCmd(t, bin, cfg); code != 1 || !strings.Contains(out, "/api/v1/backup") {
		t.Fatalf("-verify-audit on the running daemon's database: exit %d, %s", code, out)
	}
	// The copy an auditor takes from the running daemon.
	code, db := webDo(t, "GET", base+"/api/v1/backup", "alice", "pw", "")
	if code != http.StatusOK {
		t.Fatalf("backup: %d %s", code, db)
	}
	copyDir := filepath.Join(dir, "copy")
	os.MkdirAll(copyDir, 0o700)
	os.WriteFile(filepath.Join(copyDir, "rackwatch.db"), db, 0o600)
	copyCfg := filepath.Join(dir, "copy.yaml")
	os.WriteFile(copyCfg, []byte(site(copyDir, "")), 0o644)
	code, out := verifyAuditCmd(t, bin, copyCfg)
	if code != 0 || !strings.Contains(out, "audit trail ok") {
		t.Fatalf("-verify-audit on the copy: exit %d, %s", code, out)
	}

	// Edit one record in the copy: who forced the relay.
	relay := byAction["relay.set"]
	bdb, err := bolt.Open(filepath.Join(copyDir, "rackwatch.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		key := make([]byte, 8)
		for i := range 8 {
			key[7-i] = byte(relay.Seq >> (8 * i))
		}
		var r map[string]any
		if err := json.Unmarshal(b.Get(key), &r); err != nil {
			return err
		}
		r["actor"] = "someone-else"
		v, _ := json.Marshal(r)
		return b.Put(key, v)
	})
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, out = verifyAuditCmd(t, bin, copyCfg)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("seq %d:", relay.Seq)) {
		t.Fatalf("-verify-audit on the edited copy: exit %d, %s; want 1 naming seq %d", code, out, relay.Seq)
	}
	if !d.alive() {
		t.Fatal("the daemon exited")
	}
}
