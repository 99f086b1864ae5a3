package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestCheckAgreesWithStart runs every config in daemon/config/testdata through -check and
// through a real start (the config loaded as main loads it, then site.Run until Ready) and
// asserts they agree: both accept, or both refuse. ok-*.yaml and contract.yaml must be
// accepted, every other file refused.
//
// What belongs to the machine and not to the config is made to work for the start, never for
// -check: the data_dir is a temp folder, listen ports become ports the kernel picks, brokers
// point at a port where nothing answers (the uplink retries, as with a broker that is down),
// and files a config names but this machine lacks (users_file, password files) are stood in
// for by valid ones. Device paths are left as they are: a serial port, I2C bus or GPIO pin
// that is not there, or an agent that does not answer, makes an error device and the site
// still starts, so -check accepts them too; agreement is "starts" against "refused".
//
// A refused config is refused at start by the same check main runs first, so for
// runtime-*.yaml the start is also tried with that check skipped: the runtime itself (the
// uplink, the NUT server, the trap receiver, the network stack) must refuse it, which shows
// that -check refuses it for the runtime's reason and not for one of its own. bad-*.yaml are
// refused by the check alone (a 1ns poll, a .nan threshold: the runtime would start and
// misbehave).
func TestCheckAgreesWithStart(t *testing.T) {
	files, err := filepath.Glob("config/testdata/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("testdata: %v, %d files", err, len(files))
	}
	big := filepath.Join(t.TempDir(), "bad-too-large.yaml")
	src := "site: lab\nnode: r1\ndevices: [{id: u, driver: sim.ups}]\n"
	if err := os.WriteFile(big, []byte(src+"#"+strings.Repeat("x", config.MaxBytes)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files = append(files, big)
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			wantOK := strings.HasPrefix(name, "ok-") || name == "contract.yaml"
			checkOK := run([]string{"-config", path, "-check"}) == 0
			startErr := start(t, path, true)
			if checkOK != (startErr == nil) {
				t.Fatalf("-check accepted: %v; start: %v", checkOK, startErr)
			}
			if checkOK != wantOK {
				t.Fatalf("-check accepted: %v, want %v (start: %v)", checkOK, wantOK, startErr)
			}
			t.Logf("-check and start agree (accepted: %v): %v", checkOK, startErr)
			if strings.HasPrefix(name, "runtime-") {
				err := start(t, path, false)
				if err == nil {
					t.Fatal("the runtime starts it when the check is skipped: the check refuses it for a reason of its own")
				}
				t.Logf("the runtime alone refuses it: %v", err)
			}
		})
	}
}

// start loads path as main does and runs the site until it is ready, then stops it. With
// checked false, problems the check finds are ignored and the site is run with what was
// decoded. It returns why the site did not start, or nil.
func start(t *testing.T, path string, checked bool) error {
	t.Helper()
	cfg, err := config.Load(path)
	var ps config.Problems
	if err != nil && (checked || cfg == nil || !errors.As(err, &ps) || ps[0].Line == 0) {
		return err
	}
	runnable(t, cfg, err == nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ready atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- site.Run(ctx, cfg, site.Options{Version: "test", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready: func(*site.Site) { ready.Store(true); cancel() }})
	}()
	select {
	case err := <-done:
		if ready.Load() {
			return nil
		}
		if err == nil {
			err = errors.New("site.Run returned before it was ready")
		}
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("the site neither started nor failed within 60s")
		return nil
	}
}

// runnable points what cfg needs of this machine at what the test has: a temp data_dir
// always; for a config that passed the check, also free listen ports, a dead broker port,
// and stand-ins for the files it names that are not here.
func runnable(t *testing.T, cfg *config.Config, checked bool) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	if !checked {
		return
	}
	// Only a port that could work is replaced, so that the start still sees a bad one the
	// check let through.
	usable := func(port string) bool { p, err := strconv.Atoi(port); return err == nil && p >= 0 && p <= 65535 }
	anyPort := func(addr *string) {
		if host, port, err := net.SplitHostPort(*addr); err == nil && usable(port) {
			*addr = net.JoinHostPort(host, "0")
		}
	}
	anyPort(&cfg.Web.Listen)
	anyPort(&cfg.NUT.Listen)
	anyPort(&cfg.Traps.Listen)
	if _, port, err := net.SplitHostPort(cfg.MQTT.EmbeddedBroker); err == nil && usable(port) {
		cfg.MQTT.EmbeddedBroker = "127.0.0.1:" + strconv.Itoa(testpeer.FreePort(t))
	}
	dead := strconv.Itoa(testpeer.FreePort(t))
	for i, b := range cfg.MQTT.Brokers {
		if u, err := url.Parse(b); err == nil && usable(u.Port()) && u.Port() != "0" {
			u.Host = "127.0.0.1:" + dead
			cfg.MQTT.Brokers[i] = u.String()
		}
	}
	dir := t.TempDir()
	standIn := func(path *string, content string) {
		if *path == "" {
			return
		}
		if _, err := os.Stat(*path); err == nil {
			return
		}
		*path = filepath.Join(dir, strconv.Itoa(len(content))+"-"+filepath.Base(*path))
		if err := os.WriteFile(*path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	standIn(&cfg.Web.UsersFile, "admin:"+string(hash)+"\n")
	standIn(&cfg.MQTT.PasswordFile, "pw\n")
	for i := range cfg.NUT.Users {
		standIn(&cfg.NUT.Users[i].PasswordFile, "pw\n")
	}
	for _, f := range []string{cfg.Web.TLSCert, cfg.NUT.TLSCert, cfg.MQTT.TLS.CAFile, cfg.MQTT.TLS.CertFile} {
		if f != "" {
			t.Fatalf("the config names TLS file %s: give this test a stand-in for it", f)
		}
	}
}
