package nut_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func selfSigned(t *testing.T) (string, string, *x509.CertPool) { return testpeer.SelfSigned(t) }

func TestStartTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	addr, srv := start(t, nut.Config{TLSCert: certFile, TLSKey: keyFile}, newSource())
	c := dial(t, addr)
	if got := c.ask("STARTTLS"); got != "OK STARTTLS" {
		t.Fatalf("STARTTLS = %q", got)
	}
	tc := tls.Client(c.c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	for _, ex := range [][2]string{
		{"GET VAR ups1 ups.status", `VAR ups1 ups.status "OL"`},
		{"STARTTLS", "ERR ALREADY-SSL-MODE"},
		{"USERNAME monuser", "OK"},
		{"PASSWORD secret", "OK"},
		{"LOGIN ups1", "OK"},
	} {
		if got := c.ask(ex[0]); got != ex[1] {
			t.Errorf("over TLS, %s = %q, want %q", ex[0], got, ex[1])
		}
	}
	if cl := srv.Clients(); len(cl) != 1 {
		t.Errorf("Clients() = %+v", cl)
	}

	// A client that does not speak TLS after asking for it is cut off, and nobody else waits.
	bad := dial(t, addr)
	if got := bad.ask("STARTTLS"); got != "OK STARTTLS" {
		t.Fatalf("STARTTLS = %q", got)
	}
	bad.send("GET VAR ups1 ups.status")
	if got := bad.readLine(); got != "EOF" {
		t.Errorf("plain text after STARTTLS: %q, want closed", got)
	}
	if got := dial(t, addr).ask("NETVER"); got != "1.3" {
		t.Errorf("NETVER = %q", got)
	}

	// Debian's upsc still reads everything from a server that offers TLS.
	if upsc := testpeer.Require(t, "upsc", "nut-client"); upsc != "" {
		out, err := runTool(t, upsc, "ups1@"+addr, "ups.status")
		if err != nil || strings.TrimSpace(out) != "OL" {
			t.Errorf("upsc against a TLS-capable server: %q, %v", out, err)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("from-file  \nsecond line ignored\n"), 0o600)
	emptyFile := filepath.Join(dir, "empty")
	os.WriteFile(emptyFile, nil, 0o600)
	for _, tc := range []struct {
		name string
		cfg  nut.Config
		want string // in the error; "" = no error
	}{
		{"password file", nut.Config{Users: []nut.User{{Name: "u", PasswordFile: pwFile}}}, ""},
		{"missing password file", nut.Config{Users: []nut.User{{Name: "u", PasswordFile: filepath.Join(dir, "nope")}}}, "user u: read password"},
		{"empty password", nut.Config{Users: []nut.User{{Name: "u", PasswordFile: emptyFile}}}, "user u: empty password"},
		{"no name", nut.Config{Users: []nut.User{{Password: "x"}}}, "users[0]: no name"},
		{"twice", nut.Config{Users: []nut.User{{Name: "u", Password: "x"}, {Name: "u", Password: "y"}}}, "user u: defined twice"},
		{"bad role", nut.Config{Users: []nut.User{{Name: "u", Password: "x", Upsmon: "boss"}}}, `upsmon "boss"`},
		{"bad action", nut.Config{Users: []nut.User{{Name: "u", Password: "x", Actions: []string{"REBOOT"}}}}, `action "REBOOT"`},
		{"cert without key", nut.Config{TLSCert: pwFile}, "tls_cert and tls_key go together"},
		{"bad key pair", nut.Config{TLSCert: pwFile, TLSKey: pwFile}, "load TLS key pair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := nut.New(tc.cfg, newSource(), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if _, err := nut.New(nut.Config{}, nil, nil); err == nil {
		t.Error("New without a source: no error")
	}

	// The password from the file is the first line without trailing blanks.
	addr, _ := start(t, nut.Config{Users: []nut.User{{Name: "u", PasswordFile: pwFile}}}, newSource())
	c := dial(t, addr)
	for _, l := range []string{"USERNAME u", "PASSWORD from-file", "LOGIN ups1"} {
		if got := c.ask(l); got != "OK" {
			t.Errorf("%s: %q", l, got)
		}
	}
}
