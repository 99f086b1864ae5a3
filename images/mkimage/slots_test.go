package main

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/bootstate"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
)

// state is a boot state for the tests.
func state(gen uint64, order string, a, b int, trial string) bootstate.State {
	o := []string{"A", "B"}
	if order == "B A" {
		o = []string{"B", "A"}
	}
	return bootstate.State{Gen: gen, Order: o, Left: map[string]int{"A": a, "B": b}, Trial: trial}
}

// slotVM boots img with the test defaults (no broker, an idle UPS emulator).
func slotVM(t *testing.T, qemu, img string) *vm {
	t.Helper()
	return startVM(t, qemu, vmConfig{image: img, mqttPort: testpeer.FreePort(t), upsSock: serveUPS(t, upsemu.New())})
}

// wantState checks copy i of the state in img.
func wantState(t *testing.T, img string, i int, want bootstate.State) {
	t.Helper()
	got, err := bootState(t, img, i)
	if err != nil {
		t.Errorf("%s: %v", bootstate.Files[i], err)
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %+v, want %+v", bootstate.Files[i], got, want)
	}
}

// TestSlotOrderAndTornState: the boot script reads both copies of the state, ignores the
// newest one because it is torn (cut short, as a power cut during fatwrite leaves it), and
// boots slot B because the valid copy says "B A". It writes the next generation over the
// torn copy, with B's tries one less, in the same bytes internal/bootstate writes.
func TestSlotOrderAndTornState(t *testing.T) {
	qemu := requireQEMU(t)
	o := artifacts(t)
	img := filepath.Join(t.TempDir(), "order.img")
	sparseCopy(t, o.Out, img)
	valid := state(4, "B A", 3, 3, "")
	// Generation 0x50 cut after "RW_GEN=5": only RW_END (50) tells that 5 is not the
	// generation, and 5 would beat the valid copy's 4.
	torn := state(0x50, "A B", 3, 3, "").Marshal()
	setBootFile(t, img, bootstate.Files[0], valid.Marshal())
	setBootFile(t, img, bootstate.Files[1], torn[:len(torn)-3])
	// A site edits cmdline.txt on a PC, perhaps with CRLF line ends.
	setBootFile(t, img, "cmdline.txt", []byte("# edited on site\r\nRW_ARGS="+defaultCmdline+" rackwatch.site_edit=1\r\n"))

	v := slotVM(t, qemu, img)
	v.waitConsole(t, 60*time.Second, "rackwatch: boot state rwstate.0 gen 4: order B A")
	v.waitConsole(t, 30*time.Second, "rackwatch: booting slot b")
	v.waitConsole(t, 60*time.Second, "msg=starting", "prog=init", "slot=b")
	if v.consoleCount("Kernel command line: "+defaultCmdline+" rackwatch.site_edit=1 rackwatch.slot=b") != 1 {
		t.Error("the kernel command line is not cmdline.txt's RW_ARGS and rackwatch.slot=b")
	}
	v.waitHTTP(t, "/api/v1/status", 60*time.Second)
	// /init reads the state from the boot partition mounted on /boot: the boot script wrote
	// generation 5 (B's tries one less), then the running daemon gave B its tries back in
	// generation 6, once per boot (daemon/update), over the other copy.
	testpeer.Eventually(t, 60*time.Second, "rwinit bootstate showing the daemon's generation 6", func() bool {
		v.console(t, "rwinit bootstate")
		time.Sleep(time.Second)
		return v.consoleCount("console: bootstate", `booted=b gen=6 order="B A" a_left=3 b_left=3`) > 0
	})
	v.console(t, "rwinit reboot")
	v.waitExit(t, 60*time.Second, "rwinit reboot")

	wantState(t, img, 0, state(6, "B A", 3, 3, ""))
	want := state(5, "B A", 3, 2, "")
	wantState(t, img, 1, want)
	if got := bootFiles(t, img)["/"+bootstate.Files[1]]; !bytes.Equal(got, want.Marshal()) {
		t.Errorf("U-Boot wrote %q; internal/bootstate writes %q", got, want.Marshal())
	}
}

// TestSlotTrialFallsBack: an update put slot B first with one try, on trial, and B's
// rackwatch exits at start. /init reboots instead of restarting it; the boot script finds B
// with no tries left, skips it and boots A, which runs. The state then shows the tries
// spent; the trial mark stays for the daemon to report the failed update.
func TestSlotTrialFallsBack(t *testing.T) {
	qemu := requireQEMU(t)
	o := artifacts(t)
	dir := t.TempDir()
	o.RackwatchB = filepath.Join(dir, "exit1")
	if err := crossBuild(moduleRoot(t), "./images/mkimage/testdata/exit1", o.RackwatchB); err != nil {
		t.Fatal(err)
	}
	o.Out = filepath.Join(dir, "trial.img")
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	setBootFile(t, o.Out, bootstate.Files[1], state(7, "B A", 3, 1, "B").Marshal())

	v := slotVM(t, qemu, o.Out)
	v.waitConsole(t, 60*time.Second, "rackwatch: booting slot b (tries left: A 3, B 0)")
	v.waitConsole(t, 60*time.Second, "exit1: a rackwatch that fails at start")
	v.waitExit(t, 60*time.Second, "the trial slot's rackwatch failed: /init must reboot")
	if v.consoleCount("rackwatch failed on a slot on trial: rebooting") != 1 {
		t.Error("/init did not say why it rebooted")
	}
	if n := v.consoleCount("rackwatch started"); n != 1 {
		t.Errorf("rackwatch started %d times on the trial slot, want 1", n)
	}
	wantState(t, o.Out, 0, state(8, "B A", 3, 0, "B"))

	v2 := slotVM(t, qemu, o.Out)
	v2.waitConsole(t, 60*time.Second, "rackwatch: booting slot a (tries left: A 2, B 0)")
	v2.waitConsole(t, 60*time.Second, "msg=starting", "prog=init", "slot=a")
	v2.waitHTTP(t, "/api/v1/status", 60*time.Second)
	v2.waitConsole(t, 30*time.Second, "rackwatch is ready")
	// rackwatch runs on: A is not on trial, so a kill is a restart, not a reboot.
	v2.console(t, "rwinit kill")
	v2.waitConsole(t, 30*time.Second, "rackwatch started", "start=2")
	v2.powerCut()
	wantState(t, o.Out, 1, state(9, "B A", 2, 0, "B"))
}

// TestSlotStateRecovery boots only as far as U-Boot's choice (QEMU is stopped when the
// script says which slot it boots): both copies torn means the default state, and no tries
// left anywhere means both slots get their tries back, the slot on trial last.
func TestSlotStateRecovery(t *testing.T) {
	qemu := requireQEMU(t)
	o := artifacts(t)
	for _, c := range []struct {
		name       string
		copy0      []byte
		copy1      []byte
		say        string
		wantCopy   int
		want       bootstate.State
		unchanged  int
		unchangedB []byte
	}{
		// rwstate.0 is longer than what replaces it: fatwrite must shorten the file.
		{"both torn", []byte("BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\nBOOT_TRIAL=B\nRW_END=12345\nRW_GEN=1234\nJUNK=" + strings.Repeat("x", 60) + "\n"),
			state(4, "B A", 3, 3, "").Marshal()[:50],
			"rackwatch: no valid boot state: starting from the default", 0, state(1, "A B", 2, 3, ""), -1, nil},
		{"no tries left", state(0x1f, "B A", 0, 0, "B").Marshal(), state(0x1e, "B A", 3, 3, "").Marshal(),
			"rackwatch: no slot has tries left", 1, state(0x20, "A B", 2, 3, "B"), 0, state(0x1f, "B A", 0, 0, "B").Marshal()},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "recover.img")
			sparseCopy(t, o.Out, img)
			setBootFile(t, img, bootstate.Files[0], c.copy0)
			setBootFile(t, img, bootstate.Files[1], c.copy1)
			v := slotVM(t, qemu, img)
			v.waitConsole(t, 60*time.Second, c.say)
			v.waitConsole(t, 30*time.Second, "rackwatch: booting slot a")
			v.powerCut()
			wantState(t, img, c.wantCopy, c.want)
			if got := bootFiles(t, img)["/"+bootstate.Files[c.wantCopy]]; !bytes.Equal(got, c.want.Marshal()) {
				t.Errorf("U-Boot wrote %q, want %q", got, c.want.Marshal())
			}
			if c.unchanged >= 0 {
				if got := bootFiles(t, img)["/"+bootstate.Files[c.unchanged]]; !bytes.Equal(got, c.unchangedB) {
					t.Errorf("%s was rewritten: %q", bootstate.Files[c.unchanged], got)
				}
			}
		})
	}
}

// TestSlotKillDuringStateWrite cuts the power while U-Boot writes the state (QEMU is killed
// as soon as the script has read it, which is just before its fatwrite; where exactly the
// kill lands varies, and every outcome must do). The next boot must find a valid state,
// boot a slot and write its state again.
func TestSlotKillDuringStateWrite(t *testing.T) {
	qemu := requireQEMU(t)
	o := artifacts(t)
	img := filepath.Join(t.TempDir(), "kill.img")
	sparseCopy(t, o.Out, img)
	v := slotVM(t, qemu, img)
	v.waitConsole(t, 60*time.Second, "rackwatch: boot state rwstate.0 gen 0")
	v.powerCut()
	s0, err0 := bootState(t, img, 0)
	s1, err1 := bootState(t, img, 1)
	t.Logf("after the cut: rwstate.0 %+v %v; rwstate.1 %+v %v", s0, err0, s1, err1)
	if err0 != nil {
		t.Fatalf("the copy that was read (rwstate.0) is damaged: %v", err0)
	}

	v2 := slotVM(t, qemu, img)
	v2.waitConsole(t, 60*time.Second, "rackwatch: booting slot a")
	v2.powerCut()
	if v2.consoleCount("rackwatch: no valid boot state") != 0 {
		t.Error("the boot after the cut found no valid state")
	}
	files := bootFiles(t, img)
	var best uint64
	for _, f := range bootstate.Files {
		if st, err := bootstate.Parse(files["/"+f]); err == nil && st.Gen > best {
			best = st.Gen
		}
	}
	if best < 1 {
		t.Errorf("no new generation written after the cut: %q, %q", files["/rwstate.0"], files["/rwstate.1"])
	}
}
