package main

import (
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
)

// TestTestNotify: -test-notify sends one test event to the named target and says whether it
// was delivered.
func TestTestNotify(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	fail := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fail {
			http.Error(w, "nope", http.StatusForbidden)
			return
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		got = append(got, m)
	}))
	defer srv.Close()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`site: dc1
node: rack12
data_dir: %s
devices:
  - {id: leak, driver: sim.contact}
notify:
  targets:
    - {name: hook, type: webhook, url: %q}
  routes:
    - {targets: [hook]}
`, dir, srv.URL))
	if code := run([]string{"-config", cfg, "-test-notify", "hook"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	mu.Lock()
	if len(got) != 1 || got[0]["rule"] != "notify-test" || got[0]["site"] != "dc1" || got[0]["node"] != "rack12" {
		t.Errorf("received %v", got)
	}
	fail = true
	mu.Unlock()
	if code := run([]string{"-config", cfg, "-test-notify", "hook"}); code != 1 {
		t.Errorf("refused delivery: exit %d, want 1", code)
	}
	if code := run([]string{"-config", cfg, "-test-notify", "nosuch"}); code != 1 {
		t.Errorf("unknown target: exit %d, want 1", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "rackwatch.db")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("-test-notify touched the database: %v", err)
	}
}
