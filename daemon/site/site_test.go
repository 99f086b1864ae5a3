package site

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestHoldFile: the uplink's hold file goes to $RUNTIME_DIRECTORY (a tmpfs under systemd and
// on the image), one per database, else next to the database.
func TestHoldFile(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	if got := holdFile("/var/lib/rackwatch/rackwatch.db"); got != "/var/lib/rackwatch/rackwatch.db.hold" {
		t.Errorf("without RUNTIME_DIRECTORY: %s", got)
	}
	t.Setenv("RUNTIME_DIRECTORY", "/run/rackwatch:/run/other")
	a, b := holdFile("/data/a/rackwatch.db"), holdFile("/data/b/rackwatch.db")
	if filepath.Dir(a) != "/run/rackwatch" || a == b || !strings.HasSuffix(a, ".hold") {
		t.Errorf("with RUNTIME_DIRECTORY: %s and %s", a, b)
	}
}
