package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
)

const ubootBin = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// The artifacts are built once per test binary: cross builds of /init and rackwatch and one
// image, as `make image` makes them.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	built     options
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// crossBuild builds a package for linux/arm64, static, as the Makefile does.
func crossBuild(root, pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// artifacts returns the options of the image built for the tests (Out is the image).
// RACKWATCH_BIN may name a prebuilt linux/arm64 rackwatch, to try the image with another one.
func artifacts(t *testing.T) options {
	t.Helper()
	root := moduleRoot(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "rackwatch-image-test")
		if buildErr != nil {
			return
		}
		kernel, err := moduleKernel()
		if err != nil {
			buildErr = err
			return
		}
		o := options{
			Kernel:    kernel,
			Init:      filepath.Join(buildDir, "init"),
			Rackwatch: os.Getenv("RACKWATCH_BIN"),
			Config:    filepath.Join(root, "images/rackwatch-image.yaml"),
			Keys:      filepath.Join(root, "images/keys"),
			Version:   "test-x",
			Out:       filepath.Join(buildDir, "rackwatch-arm64.img"),
			Epoch:     defaultEpoch,
		}
		if buildErr = crossBuild(root, "./images/init", o.Init); buildErr != nil {
			return
		}
		if o.Rackwatch == "" {
			o.Rackwatch = filepath.Join(buildDir, "rackwatch")
			if buildErr = crossBuild(root, "./daemon", o.Rackwatch); buildErr != nil {
				return
			}
		}
		if _, buildErr = build(o); buildErr != nil {
			return
		}
		built = o
	})
	if buildErr != nil {
		t.Fatalf("build the image: %v", buildErr)
	}
	return built
}

// TestReproducible builds the image twice from the same inputs: the bytes must not differ.
// A different SOURCE_DATE_EPOCH must change them (or the test proves nothing).
func TestReproducible(t *testing.T) {
	o := artifacts(t)
	first, err := sha256File(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	line, err := os.ReadFile(o.Out + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if want := first + "  " + filepath.Base(o.Out) + "\n"; string(line) != want {
		t.Errorf("%s.sha256 = %q, want %q", o.Out, line, want)
	}
	dir := t.TempDir()
	again := o
	again.Out = filepath.Join(dir, "again.img")
	sum, err := build(again)
	if err != nil {
		t.Fatal(err)
	}
	if sum != first {
		t.Fatalf("two builds differ: %s vs %s", first, sum)
	}
	later := o
	later.Out = filepath.Join(dir, "later.img")
	later.Epoch++
	if sum, err = build(later); err != nil {
		t.Fatal(err)
	}
	if sum == first {
		t.Error("SOURCE_DATE_EPOCH does not reach the image")
	}
}

// vm is one QEMU run of an image.
type vm struct {
	proc    *testpeer.Proc
	stdin   io.WriteCloser
	exited  chan struct{}
	webPort int
}

type vmConfig struct {
	image    string
	snapshot bool
	mqttPort int
	upsSock  string // unix socket the UPS emulator listens on
}

func requireQEMU(t *testing.T) string {
	t.Helper()
	qemu := testpeer.Require(t, "qemu-system-aarch64", "qemu-system-arm")
	testpeer.Require(t, "socat", "socat")
	testpeer.RequireFile(t, ubootBin, "u-boot-qemu")
	return qemu
}

func startVM(t *testing.T, qemu string, c vmConfig) *vm {
	t.Helper()
	v := &vm{webPort: testpeer.FreePort(t), exited: make(chan struct{})}
	drive := "if=none,file=" + c.image + ",format=raw,id=d0"
	if c.snapshot {
		drive += ",snapshot=on"
	}
	args := []string{
		"-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-nographic", "-no-reboot",
		"-bios", ubootBin,
		"-drive", drive, "-device", "virtio-blk-device,drive=d0",
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:80,guestfwd=tcp:10.0.2.100:1883-cmd:socat - TCP:127.0.0.1:%d", v.webPort, c.mqttPort),
		"-device", "virtio-net-device,netdev=n0",
		// The UPS: a virtio console (/dev/hvc0 in the guest, a tty like a USB serial adapter)
		// wired to the emulator's socket.
		"-chardev", "socket,id=ups0,path=" + c.upsSock,
		"-device", "virtio-serial-device",
		"-device", "virtconsole,chardev=ups0,name=ups",
		// A hardware watchdog (/dev/watchdog): /init arms and feeds it. Unfed, it resets the
		// guest, and with -no-reboot QEMU would exit.
		"-device", "i6300esb", "-action", "watchdog=reset",
	}
	cmd := exec.Command(qemu, args...)
	v.proc = &testpeer.Proc{Cmd: cmd}
	cmd.Stdout, cmd.Stderr = v.proc, v.proc
	var err error
	if v.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() { cmd.Wait(); close(v.exited) }()
	t.Cleanup(func() {
		select {
		case <-v.exited:
		default:
			cmd.Process.Kill()
			<-v.exited
		}
		if t.Failed() {
			t.Logf("guest console:\n%s", v.proc.Output())
		}
	})
	return v
}

// console types a line on the guest's serial console.
func (v *vm) console(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(v.stdin, line+"\n"); err != nil {
		t.Fatalf("console %q: %v", line, err)
	}
}

func (v *vm) get(path string) (int, []byte, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", v.webPort, path))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// waitHTTP waits until path answers 200 and returns the body.
func (v *vm) waitHTTP(t *testing.T, path string, within time.Duration) []byte {
	t.Helper()
	var body []byte
	testpeer.Eventually(t, within, "GET "+path+" through hostfwd", func() bool {
		code, b, err := v.get(path)
		body = b
		return err == nil && code == http.StatusOK
	})
	return body
}

// consoleCount counts console lines containing all of has.
func (v *vm) consoleCount(has ...string) int {
	n := 0
	for _, l := range strings.Split(v.proc.Output(), "\n") {
		if testpeer.ContainsAll(l, has...) {
			n++
		}
	}
	return n
}

// serveUPS runs the Megatec emulator on a unix socket that QEMU's chardev connects to, once
// per boot.
func serveUPS(t *testing.T, e *upsemu.Emulator) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ups.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.ServeListener(ctx, l, nil)
	}()
	t.Cleanup(func() { cancel(); l.Close(); wg.Wait() })
	return sock
}

type statusDoc struct {
	Devices []struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Readings map[string]struct {
			Value   any    `json:"value"`
			Quality string `json:"quality"`
		} `json:"readings"`
	} `json:"devices"`
}

// reading returns a device's reading from /api/v1/status as text ("" when absent).
func (v *vm) reading(device, metric string) string {
	code, b, err := v.get("/api/v1/status")
	if err != nil || code != http.StatusOK {
		return ""
	}
	var s statusDoc
	if json.Unmarshal(b, &s) != nil {
		return ""
	}
	for _, d := range s.Devices {
		if d.ID == device {
			if r, ok := d.Readings[metric]; ok {
				return fmt.Sprint(r.Value)
			}
		}
	}
	return ""
}

// incidents maps the id of every incident in a JSON document to its opened_at: ids are
// counters, so a fresh store would give the same id again, but not the same opened_at.
func incidents(b []byte) map[string]string {
	var doc any
	out := map[string]string{}
	if json.Unmarshal(b, &doc) != nil {
		return out
	}
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if id, ok := x["id"]; ok {
				if at, ok := x["opened_at"]; ok {
					out[fmt.Sprint(id)] = fmt.Sprint(at)
				}
			}
			for _, v := range x {
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	walk(doc)
	return out
}

// seqOf is the seq of a telemetry payload.
func seqOf(payload string) (int64, bool) {
	var m struct {
		Seq int64 `json:"seq"`
	}
	return m.Seq, json.Unmarshal([]byte(payload), &m) == nil
}

// maxSeq is the highest seq among the telemetry messages received so far.
func maxSeq(sub *testpeer.Sub) int64 {
	var max int64 = -1
	for _, p := range sub.Matching("/telemetry") {
		if seq, ok := seqOf(p); ok && seq > max {
			max = seq
		}
	}
	return max
}

// keeps reports whether v lists every incident of before with the same opened_at.
func (v *vm) keeps(before map[string]string) bool {
	_, b, err := v.get("/api/v1/incidents?state=all")
	if err != nil {
		return false
	}
	after := incidents(b)
	for id, at := range before {
		if after[id] != at {
			return false
		}
	}
	return true
}

// TestBoot boots the image in QEMU and checks what the firmware promises: the web page
// through hostfwd, MQTT through guestfwd, a Megatec UPS on a virtio console, the restart of a
// killed rackwatch by /init, and incidents and seq kept on the data partition across a
// reboot. It runs on a copy of the image without snapshot=on so that the reboot sees what the
// first boot wrote; and after a power cut.
func TestBoot(t *testing.T) {
	qemu := requireQEMU(t)
	o := artifacts(t)
	img := filepath.Join(t.TempDir(), "boot.img")
	copyFile(t, o.Out, img)

	mq := testpeer.StartMosquitto(t)
	sub := mq.Subscribe(t, "rackwatch/#", "")
	ups := upsemu.New()
	ups.Update(func(f *upsemu.Fields) { f.InputVoltage = 221.5; f.Load = 37 })
	sock := serveUPS(t, ups)

	start := time.Now()
	v := startVM(t, qemu, vmConfig{image: img, mqttPort: mq.Port, upsSock: sock})
	page := v.waitHTTP(t, "/", 60*time.Second)
	t.Logf("status page answered %v after QEMU started (%d bytes)", time.Since(start).Round(100*time.Millisecond), len(page))

	if v.consoleCount("hardware watchdog armed") != 1 {
		t.Error("/init did not arm the i6300esb watchdog")
	}
	testpeer.Eventually(t, 30*time.Second, `state "online" on rackwatch/demo/qemu/state through guestfwd`, func() bool {
		return len(sub.Matching("rackwatch/demo/qemu/state", `"online"`)) > 0
	})
	testpeer.Eventually(t, 30*time.Second, "ups-serial input.voltage 221.5 and ups.load 37 from the emulator on /dev/hvc0", func() bool {
		return v.reading("ups-serial", "input.voltage") == "221.5" && v.reading("ups-serial", "ups.load") == "37"
	})

	// Kill rackwatch; /init must start it again.
	if n := v.consoleCount("rackwatch started", "start=1"); n != 1 {
		t.Fatalf("%d first starts on the console, want 1", n)
	}
	onlines := len(sub.Matching("/state", `"online"`))
	v.console(t, "rwinit kill")
	testpeer.Eventually(t, 20*time.Second, "/init reporting the death of rackwatch", func() bool {
		return v.consoleCount("rackwatch exited; restarting", "killed") == 1
	})
	testpeer.Eventually(t, 20*time.Second, "/init starting rackwatch again", func() bool {
		return v.consoleCount("rackwatch started", "start=2") == 1
	})
	v.waitHTTP(t, "/api/v1/status", 30*time.Second)
	testpeer.Eventually(t, 30*time.Second, "online again after the restart", func() bool {
		return len(sub.Matching("/state", `"online"`)) > onlines
	})

	// The door is open in the demo config: an incident. Remember it and the telemetry seq.
	var before map[string]string
	testpeer.Eventually(t, 30*time.Second, "an incident listed", func() bool {
		_, b, err := v.get("/api/v1/incidents?state=all")
		before = incidents(b)
		return err == nil && len(before) > 0
	})
	t.Logf("incidents before the reboot: %v", before)
	testpeer.Eventually(t, 30*time.Second, "telemetry with a seq", func() bool { return maxSeq(sub) > 0 })
	seqBefore := maxSeq(sub)

	// Orderly reboot: with -no-reboot QEMU exits; boot the same disk again.
	v.console(t, "rwinit reboot")
	select {
	case <-v.exited:
	case <-time.After(40 * time.Second):
		t.Fatal("QEMU did not exit after rwinit reboot")
	}
	if v.consoleCount(`msg="rackwatch stopped" prog=init`) != 1 {
		t.Error("/init did not report stopping rackwatch before the reboot")
	}
	v2 := startVM(t, qemu, vmConfig{image: img, mqttPort: mq.Port, upsSock: sock})
	v2.waitHTTP(t, "/api/v1/status", 60*time.Second)
	if v2.consoleCount("first boot: installed the default config") != 0 {
		t.Error("the second boot installed the default config again: /data did not keep it")
	}
	testpeer.Eventually(t, 30*time.Second, "the incidents of the first boot (same id, same opened_at) after the reboot", func() bool {
		return v2.keeps(before)
	})
	testpeer.Eventually(t, 30*time.Second, "telemetry after the reboot continuing the seq", func() bool {
		return maxSeq(sub) > seqBefore
	})
	// No seq may be reused. QoS 1 may deliver a message twice (the kill can come between
	// the broker's PUBACK and rackwatch recording it), but then with the same payload.
	noReuse := func(when string) {
		seen := map[int64]string{}
		for _, p := range sub.Matching("/telemetry") {
			seq, ok := seqOf(p)
			if !ok {
				continue
			}
			if prev, ok := seen[seq]; ok && prev != p {
				t.Errorf("%s: telemetry seq %d reused for a different message:\n%s\n%s", when, seq, prev, p)
			}
			seen[seq] = p
		}
	}
	noReuse("after the reboot")

	// A power cut: QEMU killed without warning, with rackwatch writing. The next boot must
	// still come up with the data partition and what was on it. Held telemetry (in /run)
	// is gone with the power: the seq jumps past what was reserved, never back.
	seqCut := maxSeq(sub)
	v2.proc.Cmd.Process.Kill()
	<-v2.exited
	v3 := startVM(t, qemu, vmConfig{image: img, mqttPort: mq.Port, upsSock: sock})
	v3.waitHTTP(t, "/api/v1/status", 60*time.Second)
	if v3.consoleCount("data partition mounted") != 1 || v3.consoleCount("first boot: installed") != 0 {
		t.Error("after a power cut the data partition was not mounted with its config")
	}
	testpeer.Eventually(t, 30*time.Second, "the first boot's incidents after a power cut", func() bool {
		return v3.keeps(before)
	})
	testpeer.Eventually(t, 30*time.Second, "telemetry after the power cut continuing the seq", func() bool {
		return maxSeq(sub) > seqCut
	})
	noReuse("after the power cut")
	// Only the power cut loses held telemetry, and rackwatch says so; the kill (the hold
	// file in /run outlives the process) and the orderly reboot do not.
	const gone = "held telemetry is gone"
	if n := v.consoleCount(gone) + v2.consoleCount(gone); n != 0 {
		t.Errorf("%q logged %d times before the power cut", gone, n)
	}
	testpeer.Eventually(t, 30*time.Second, "rackwatch reporting the held telemetry lost in the power cut", func() bool {
		return v3.consoleCount(gone) == 1
	})
	t.Logf("booted three times (one kill, one reboot, one power cut) in %v", time.Since(start).Round(100*time.Millisecond))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	sparseCopy(t, src, dst)
}

// TestWatchdog proves both halves of the hardware watchdog: /init feeds it (the guest outlives
// several timeouts), and an unfed watchdog resets the board ("rwinit watchdog-test"; QEMU's
// reset ends QEMU under -no-reboot). The image differs from the shipped one only in its
// kernel command line (a 2 s timeout instead of 30 s), as a site would edit cmdline.txt.
func TestWatchdog(t *testing.T) {
	qemu := requireQEMU(t)
	o := artifacts(t)
	o.Cmdline = defaultCmdline + " rackwatch.watchdog=2"
	o.Out = filepath.Join(t.TempDir(), "watchdog.img")
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	sock := serveUPS(t, upsemu.New())
	v := startVM(t, qemu, vmConfig{image: o.Out, snapshot: true, mqttPort: testpeer.FreePort(t), upsSock: sock})
	v.waitHTTP(t, "/", 60*time.Second)
	if v.consoleCount("hardware watchdog armed", "timeout_s=2") != 1 {
		t.Fatal("/init did not arm the watchdog with rackwatch.watchdog=2")
	}
	// Fed: alive well past several timeouts (an unfed i6300esb resets after two).
	select {
	case <-v.exited:
		t.Fatal("the guest reset although /init feeds the watchdog")
	case <-time.After(6 * time.Second):
	}
	v.waitHTTP(t, "/", 10*time.Second)

	v.console(t, "rwinit watchdog-test")
	select {
	case <-v.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the guest did not reset after /init stopped feeding the watchdog")
	}
	if v.consoleCount("no longer feeding the watchdog") != 1 {
		t.Error("/init did not log the watchdog test")
	}
	if v.consoleCount("msg=bye") != 0 {
		t.Error("an orderly reboot, not the watchdog, ended the guest")
	}
}
