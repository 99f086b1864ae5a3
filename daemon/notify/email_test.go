package notify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestEmailAiosmtpd: a Python aiosmtpd server that requires STARTTLS and a login receives
// one plain-text message per event, with the page's URL.
func TestEmailAiosmtpd(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat("/usr/lib/python3/dist-packages/aiosmtpd"); err != nil {
		testpeer.Require(t, "/nonexistent/aiosmtpd", "python3-aiosmtpd")
	}
	cert, key, _ := testpeer.SelfSigned(t)
	dir, out := t.TempDir(), t.TempDir()
	port := testpeer.FreePort(t)
	testpeer.Start(t, py, "testdata/smtpd.py", fmt.Sprint(port), cert, key, "alerts", "s3cret", out)
	testpeer.WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	db := openDB(t, dir)
	defer db.Close()
	n, stop := start(t, db, Config{PageURL: "http://rack12.example:8080/", Targets: []Target{{Name: "mail", Type: "email",
		SMTP: fmt.Sprintf("127.0.0.1:%d", port), From: "rackwatch@example.net", To: []string{"noc@example.net", "oncall@example.net"},
		Username: "alerts", PasswordFile: pw, CAFile: cert}}, Routes: []Route{{Targets: []string{"mail"}}}})
	defer stop()
	e := event("rack12-5", Opened, "critical")
	r := e
	r.Event = Resolved
	stage(t, db, n, e, r)
	var files []string
	defer func() {
		if t.Failed() {
			t.Logf("stats %+v", n.Stats())
		}
	}()
	waitFor(t, "two messages", func() bool { files, _ = filepath.Glob(filepath.Join(out, "*.eml")); return len(files) == 2 })
	for i, want := range []string{"opened", "resolved"} {
		b, _ := os.ReadFile(files[i])
		m := strings.ReplaceAll(string(b), "\r\n", "\n")
		for _, has := range []string{"X-TLS: yes", "X-Auth: True", "X-Envelope-To: noc@example.net,oncall@example.net",
			"Subject: [rackwatch dc1/rack12] CRITICAL " + want + ": leak on leak", "Content-Type: text/plain",
			"Incident:  rack12-5", "Page: http://rack12.example:8080/", "Key:       dc1/rack12/rack12-5"} {
			if !strings.Contains(m, has) {
				t.Errorf("message %d lacks %q:\n%s", i, has, m)
			}
		}
	}
	// An audit record (audit: true) is a message of its own.
	rec := audit.Record{Seq: 9, TS: "2026-12-03T10:00:00.000Z", Actor: "bob", Source: "web", Action: "login", Hash: strings.Repeat("1a", 32)}
	if err := n.SendAudit(context.Background(), "mail", rec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the audit message", func() bool { files, _ = filepath.Glob(filepath.Join(out, "*.eml")); return len(files) == 3 })
	var found bool
	for _, f := range files {
		b, _ := os.ReadFile(f)
		m := strings.ReplaceAll(string(b), "\r\n", "\n")
		if strings.Contains(m, "Subject: [rackwatch dc1/rack12] audit: login by bob") {
			found = strings.Contains(m, "Seq:     9") && strings.Contains(m, "Hash:    "+rec.Hash)
			if !found {
				t.Errorf("audit message:\n%s", m)
			}
		}
	}
	if !found {
		t.Error("no audit message")
	}
}
