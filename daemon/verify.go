package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/config"
)

// verifyAudit checks the audit trail of cfg's database (-verify-audit): 0 and the record
// count, or 1 and the first broken record. It opens the database read-only, which a running
// daemon's lock refuses: it then says how to check a copy instead.
func verifyAudit(cfg *config.Config, stdout, stderr io.Writer) int {
	path := filepath.Join(cfg.DataDir, "rackwatch.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		fmt.Fprintf(stderr, `rackwatch: %s is in use by the running daemon (it holds the file's lock).
Verify a consistent copy instead: fetch it from the running daemon with
  curl -u USER -o /tmp/rackwatch.db http://%s/api/v1/backup
put it in the data_dir of a copy of the config, and run -verify-audit on that config (or stop
the daemon and run this again). A plain cp of the file while the daemon writes is not safe.
`, path, cfg.Web.Listen)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "rackwatch: open %s: %v\n", path, err)
		return 1
	}
	defer db.Close()
	n, err := audit.Verify(db)
	if err != nil {
		fmt.Fprintf(stderr, "rackwatch: %s: audit trail broken: %v\n", path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: audit trail ok, %d records\n", path, n)
	return 0
}
