package main

import (
	"fmt"
	"io"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
)

// runReplay is -replay: the timeline through the real rules and policies, JSON lines out.
func runReplay(cfg *config.Config, timeline string, out, errOut io.Writer) int {
	tl, err := site.ReadTimeline(timeline)
	if err != nil {
		fmt.Fprintln(errOut, "rackwatch: -replay:", err)
		return 1
	}
	if err := site.Replay(cfg, tl, out); err != nil {
		fmt.Fprintln(errOut, "rackwatch: -replay:", err)
		return 1
	}
	return 0
}
