// Package upslatency measures issue 9's UPS latency: the pty UPS emulator changes state →
// `upsc` sees the new ups.status, through rackwatch's NUT server and, in the same run on the
// same emulated UPS with the same poll interval, through NUT's own nutdrv_qx + upsd. It is a
// benchmark only (go test -bench UPSLatency -benchtime=1x); it imports the daemon as a
// library and nothing imports it.
package upslatency

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
	_ "github.com/rackwatch/rackwatch/sensors/all"
)

// pollInterval is both rackwatch's `poll` and nutdrv_qx's pollinterval.
const pollInterval = time.Second

// startNUT runs NUT's nutdrv_qx on tty and upsd in a private folder; it returns upsd's address.
func startNUT(b *testing.B, tty string) string {
	b.Helper()
	drv := testpeer.Require(b, "/lib/nut/nutdrv_qx", "nut-server")
	upsd := testpeer.Require(b, "/lib/nut/upsd", "nut-server")
	dir := b.TempDir()
	who := "root"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	port := testpeer.FreePort(b)
	files := map[string]string{
		// pollfreq = pollinterval: every poll is a full one, as rackwatch's are.
		"ups.conf":   fmt.Sprintf("[ups]\n\tdriver = nutdrv_qx\n\tport = %s\n\tprotocol = megatec\n\tpollinterval = %d\n\tpollfreq = %d\n", tty, int(pollInterval.Seconds()), int(pollInterval.Seconds())),
		"upsd.conf":  fmt.Sprintf("LISTEN 127.0.0.1 %d\n", port),
		"upsd.users": "",
		"nut.conf":   "MODE=standalone\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	env := []string{"NUT_CONFPATH=" + dir, "NUT_STATEPATH=" + dir, "NUT_ALTPIDPATH=" + dir}
	testpeer.StartEnv(b, env, drv, "-a", "ups", "-u", who, "-F")
	testpeer.StartEnv(b, env, upsd, "-u", who, "-F")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testpeer.WaitTCP(b, addr, 20*time.Second)
	return addr
}

// startSite runs rackwatch with one megatec UPS on tty and its NUT server; it returns the
// server's address.
func startSite(b *testing.B, tty string) string {
	b.Helper()
	port := testpeer.FreePort(b)
	cfg, err := config.Parse("upslatency.yaml", fmt.Appendf(nil, `site: upslat
node: n1
data_dir: %s
web: {listen: "127.0.0.1:0"}
nut: {listen: "127.0.0.1:%d"}
devices:
  - {id: ups, driver: megatec, port: %s, poll: %s}
`, b.TempDir(), port, tty, pollInterval))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- site.Run(ctx, cfg, site.Options{Version: "bench", Ready: func(*site.Site) { close(ready) }})
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("site: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		b.Fatalf("site did not start: %v", err)
	case <-time.After(30 * time.Second):
		b.Fatal("site did not start in 30 s")
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// status is `upsc UPS@ADDR ups.status` ("" while it fails).
func status(upsc, ups, addr string) string {
	out, err := exec.Command(upsc, ups+"@"+addr, "ups.status").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// isOBLB: "OB LB" and nothing but more flags.
func isOBLB(s string) bool {
	f := strings.Fields(s)
	return slices.Contains(f, "OB") && slices.Contains(f, "LB")
}

func isOL(s string) bool { return slices.Contains(strings.Fields(s), "OL") }

// BenchmarkUPSLatency: BENCH_UPS_CYCLES (default 10) cycles of OL → OB LB → OL; each
// transition is timed for both servers by a goroutine per server running upsc back to back
// (a few ms apart) until it shows the new state. Both servers poll every second, so the
// expected latency is about half an interval plus the work. Target: rackwatch/NUT ≤ 1.0.
func BenchmarkUPSLatency(b *testing.B) {
	upsc := testpeer.Require(b, "upsc", "nut-client")
	cycles := 10
	if n, err := strconv.Atoi(os.Getenv("BENCH_UPS_CYCLES")); err == nil && n > 0 {
		cycles = n
	}
	emu := upsemu.StartT(b)
	tty2, err := emu.AddPTY()
	if err != nil {
		b.Fatal(err)
	}
	servers := []struct{ name, ups, addr string }{
		{"rackwatch", "ups", startSite(b, emu.Path())},
		{"nut", "ups", startNUT(b, tty2)},
	}
	for _, s := range servers {
		testpeer.Eventually(b, 60*time.Second, s.name+" shows OL", func() bool { return isOL(status(upsc, s.ups, s.addr)) })
	}
	for range b.N {
		lat := make([][]time.Duration, len(servers))
		for c := range 2 * cycles {
			toBattery := c%2 == 0
			want := isOL
			if toBattery {
				want = isOBLB
			}
			// Start each transition at a random phase of the poll interval.
			time.Sleep(pollInterval/3 + time.Duration(c*137)%pollInterval)
			emu.SetOnBattery(toBattery)
			emu.SetLowBattery(toBattery)
			t0 := time.Now()
			var wg sync.WaitGroup
			for i, s := range servers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Since(t0) < 30*time.Second {
						if want(status(upsc, s.ups, s.addr)) {
							lat[i] = append(lat[i], time.Since(t0))
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			wg.Wait()
			for i, s := range servers {
				if len(lat[i]) != c+1 {
					b.Fatalf("%s did not show the change %d within 30 s: %q", s.name, c, status(upsc, s.ups, s.addr))
				}
			}
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		var means [2]float64
		for i, s := range servers {
			l := slices.Clone(lat[i])
			slices.Sort(l)
			var sum time.Duration
			for _, d := range l {
				sum += d
			}
			means[i] = ms(sum) / float64(len(l))
			b.ReportMetric(means[i], s.name+"-mean-ms")
			b.ReportMetric(ms(l[len(l)/2]), s.name+"-p50-ms")
			b.ReportMetric(ms(l[len(l)-1]), s.name+"-max-ms")
		}
		b.ReportMetric(means[0]/means[1], "ratio")
		b.ReportMetric(float64(2*cycles), "transitions")
	}
}
