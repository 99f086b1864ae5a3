package uplink

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// R/state carries the Firmware object, and RefreshState publishes it again when it changed.
func TestStateFirmware(t *testing.T) {
	m := startMosquitto(t)
	sub := m.Subscribe(t, root+"/state", "")
	var committed atomic.Bool
	o := testOptions(m.URL)
	o.Firmware = func() any {
		return map[string]any{"version": "v2", "slot": "b", "committed": committed.Load()}
	}
	u := start(t, tempDB(t), o)
	testpeer.Eventually(t, 30*time.Second, "online with firmware", func() bool {
		return len(sub.Matching("/state", `"state":"online"`, `"firmware":{"committed":false,"slot":"b","version":"v2"}`)) == 1
	})
	committed.Store(true)
	u.RefreshState()
	testpeer.Eventually(t, 30*time.Second, "online again, committed", func() bool {
		return len(sub.Matching("/state", `"state":"online"`, `"committed":true`)) == 1
	})
}
