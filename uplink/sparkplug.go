package uplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/rackwatch/rackwatch/uplink/sparkplug"
)

// Formats of telemetry (Options.Format).
const (
	FormatJSON      = "json"        // R/telemetry, CONTRACT.md §4
	FormatSparkplug = "sparkplug_b" // a Sparkplug B edge node (uplink/sparkplug) instead of R/telemetry
)

// checkFormat reports why the telemetry format settings cannot be used.
func checkFormat(o Options) error {
	switch o.Format {
	case "", FormatJSON:
		return nil
	case FormatSparkplug:
		return o.Sparkplug.Check()
	}
	return fmt.Errorf("format %q not supported (%s, %s)", o.Format, FormatJSON, FormatSparkplug)
}

// newSparkplug makes the Sparkplug edge node when the format asks for one. It has a connection
// of its own (client id ClientID + "-spb") to the same brokers with the same credentials.
func (u *Uplink) newSparkplug() error {
	if u.opts.Format != FormatSparkplug {
		return nil
	}
	o := u.opts
	var pw func() (string, error)
	if o.PasswordFile != "" {
		pw = func() (string, error) { return readPassword(o.PasswordFile) }
	}
	n, err := sparkplug.New(sparkplug.Options{Config: o.Sparkplug, Brokers: o.Brokers, ClientID: o.ClientID + "-spb",
		Username: o.Username, Password: pw, TLS: func(host string) (*tls.Config, error) { return tlsConfig(o, host) },
		DB: u.db, Logger: o.Logger, ConnectTimeout: o.ConnectTimeout, KeepAlive: o.KeepAlive,
		BackoffBase: o.BackoffBase, BackoffMax: o.BackoffMax})
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	u.spb = n
	return nil
}

// runSparkplug runs the edge node until ctx ends; the returned wait waits for it.
func (u *Uplink) runSparkplug(ctx context.Context) (wait func()) {
	if u.spb == nil {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := u.spb.Run(ctx); err != nil {
			u.log.Error("sparkplug", "err", err)
		}
	}()
	return wg.Wait
}

// sparkplugTelemetry hands the readings to the edge node, which publishes what changed.
func (u *Uplink) sparkplugTelemetry(rs []Reading) {
	ms := make([]sparkplug.Metric, len(rs))
	for i, r := range rs {
		ts, _ := time.Parse(time.RFC3339Nano, r.TS)
		ms[i] = sparkplug.Metric{Device: r.Device, Name: r.Metric, Value: r.Value, Unit: r.Unit, Quality: r.Quality, TS: ts}
	}
	u.spb.Update(ms)
}
