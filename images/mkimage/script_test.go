package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestScriptImageIsMkimage compiles boot.cmd with Debian's mkimage (u-boot-tools), with
// SOURCE_DATE_EPOCH for its timestamp, and compares the bytes with boot.scr as build writes
// it; dumpimage must also accept ours.
func TestScriptImageIsMkimage(t *testing.T) {
	mkimage := testpeer.Require(t, "mkimage", "u-boot-tools")
	dumpimage := testpeer.Require(t, "dumpimage", "u-boot-tools")
	mtime := time.Unix(defaultEpoch, 0)
	for _, cmdline := range []string{defaultCmdline, "console=ttyS2,1500000 rackwatch.ip=192.168.1.9/24"} {
		s, err := bootScript(cmdline, mtime)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		cmdFile := filepath.Join(dir, "boot.cmd")
		if err := os.WriteFile(cmdFile, []byte(s.text), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "boot.scr")
		cmd := exec.Command(mkimage, "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "rackwatch boot", "-d", cmdFile, out)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(defaultEpoch, 10))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mkimage: %v\n%s", err, b)
		}
		want, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s.image, want) {
			n := 0
			for n < len(want) && n < len(s.image) && want[n] == s.image[n] {
				n++
			}
			t.Errorf("boot.scr differs from mkimage's at byte %d (%d vs %d bytes)", n, len(s.image), len(want))
		}
		ours := filepath.Join(dir, "ours.scr")
		os.WriteFile(ours, s.image, 0o644)
		if b, err := exec.Command(dumpimage, "-l", ours).CombinedOutput(); err != nil || !bytes.Contains(b, []byte("Script")) {
			t.Errorf("dumpimage -l: %v\n%s", err, b)
		}
	}
	if _, err := bootScript(`console=ttyAMA0 x="$y"`, mtime); err == nil {
		t.Error("a command line with quotes and $ was pasted into the script")
	}
}
