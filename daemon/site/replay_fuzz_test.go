package site

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
)

// FuzzTimeline: whatever a timeline file holds, parsing and replaying it ends with an error or
// decisions, never a panic. Timelines longer than ten minutes of virtual time are only parsed, so
// that one input stays fast.
func FuzzTimeline(f *testing.F) {
	files, _ := filepath.Glob("testdata/replay/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("events:\n  - {at: -5s, device: ups1, set: {ups.status: .nan}}\n"))
	f.Add([]byte("until: 1s\nevents:\n  - {at: 0s, device: nosuch, fail: true}\n  - {at: 0s, ack: power:shutdown}\n"))
	cfg, err := config.Load("testdata/replay/power.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tl, err := ParseTimeline("fuzz.yaml", b)
		if err != nil || tl.Until > 10*time.Minute || tl.Until < 0 || len(tl.Events) > 20 {
			return
		}
		for _, e := range tl.Events {
			if e.At > 10*time.Minute || e.At < -10*time.Minute {
				return
			}
		}
		Replay(cfg, tl, io.Discard)
	})
}
