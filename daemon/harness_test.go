package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// The end-to-end tests run the daemon as the process it is in the rack: built with go build,
// given a config file, stopped by a signal. This file is how each of them does that, so that a
// test says only what its site is and what it checks.

// buildDaemon builds the rackwatch binary into the test's temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rackwatch")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

// writeConfig writes yaml as dir/site.yaml and returns its path. 0600: some configs name
// webhook URLs, which are secrets.
func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	cfg := filepath.Join(dir, "site.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// daemon is a rackwatch process under test. Its output is kept and shown if the test fails.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	cfg  string
	out  *testpeer.Buffer
	done chan struct{}
}

// startDaemon starts bin on cfg; the test's cleanup kills it if it still runs.
func startDaemon(t *testing.T, bin, cfg string) *daemon {
	t.Helper()
	d := &daemon{t: t, cfg: cfg, out: &testpeer.Buffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, "-config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.out.String())
		}
	})
	return d
}

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemon) signal(sig os.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends sig and waits for the process to exit.
func (d *daemon) stop(sig os.Signal) {
	d.t.Helper()
	d.signal(sig)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		d.t.Fatalf("the daemon did not stop within 60 s of %v", sig)
	}
}

// write replaces the daemon's config file, for a reload.
func (d *daemon) write(yaml string) {
	d.t.Helper()
	if err := os.WriteFile(d.cfg, []byte(yaml), 0o600); err != nil {
		d.t.Fatal(err)
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
