package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/notify"
)

// runTestNotify sends one test event straight to a notify target, outside its queue (the
// running daemon's queues are not touched, nor is its database opened), and says how it went.
func runTestNotify(cfg *config.Config, name string, stdout, stderr io.Writer) int {
	nc := cfg.Notify
	if nc.PageURL == "" {
		nc.PageURL = notify.PageURL(cfg.Web.Listen, cfg.Web.TLSCert != "")
	}
	var names []string
	for _, t := range nc.Targets {
		names = append(names, t.Name)
	}
	n, err := notify.New(nil, nc, notify.Options{Site: cfg.Site, Node: cfg.Node})
	if err != nil {
		fmt.Fprintln(stderr, "rackwatch:", err)
		return 1
	}
	defer n.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	if err := n.Test(ctx, name); err != nil {
		fmt.Fprintf(stderr, "rackwatch: test event to %s not delivered: %v (targets: %v)\n", name, err, names)
		return 1
	}
	fmt.Fprintf(stdout, "test event delivered to %s in %v\n", name, time.Since(start).Round(time.Millisecond))
	return 0
}
