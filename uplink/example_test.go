package uplink_test

import (
	"context"
	"log"
	"os"
	"path/filepath"

	"github.com/rackwatch/rackwatch/uplink"
	"go.etcd.io/bbolt"
)

// The daemon's wiring: one bbolt file shared with the rest of the daemon, Run for the
// lifetime of the site, Telemetry every telemetry_interval, Incident on every incident event.
func Example() {
	db, err := bbolt.Open(filepath.Join(os.TempDir(), "rackwatch-example.db"), 0o600, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	u, err := uplink.New(db, uplink.Options{
		Brokers: []string{"tcp://127.0.0.1:1883", "ssl://backup.example:8883"},
		Prefix:  "rackwatch", Site: "dc1-hall2", Node: "rack12",
		Version: "1.0.0", BootID: "7f3c",
		OnDrop: func(d uplink.Drop) { log.Printf("uplink dropped %d telemetry messages", d.Messages) },
	})
	if err != nil {
		log.Fatal(err)
	}
	u.OnCommand(func(ctx context.Context, c uplink.Command) error {
		log.Printf("command %s: %s", c.ID, c.Action)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- u.Run(ctx) }()

	u.Telemetry([]uplink.Reading{{Device: "ups1", Metric: "ups.status", Value: "OL", Quality: "good", TS: "2026-11-25T06:00:00.000Z"}})
	u.Incident(uplink.Incident{ID: "inc-1", Event: "opened", Severity: "critical", Rule: "ups1-on-battery"})

	cancel() // on SIGTERM: offline published, queue on disk
	<-done
}
