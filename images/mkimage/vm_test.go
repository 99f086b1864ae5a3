package main

import (
	"os"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/rackwatch/rackwatch/internal/bootstate"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// Helpers shared by the QEMU tests of this package (boot, slots, updates), next to startVM
// and the vm type in boot_test.go.

// sparseCopy copies the image src to dst without writing its zero blocks: most of an image
// is free space, and a test may hold several copies.
func sparseCopy(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Truncate(st.Size()); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if err := copySparse(dst, 0, src); err != nil {
		t.Fatal(err)
	}
}

// waitConsole waits until a console line contains all of has.
func (v *vm) waitConsole(t *testing.T, within time.Duration, has ...string) {
	t.Helper()
	testpeer.Eventually(t, within, "console line with "+quoteAll(has), func() bool { return v.consoleCount(has...) > 0 })
}

func quoteAll(has []string) string {
	s := ""
	for i, h := range has {
		if i > 0 {
			s += " and "
		}
		s += "\"" + h + "\""
	}
	return s
}

// waitExit waits for QEMU to end by itself (a reset or a reboot, under -no-reboot).
func (v *vm) waitExit(t *testing.T, within time.Duration, why string) {
	t.Helper()
	select {
	case <-v.exited:
	case <-time.After(within):
		t.Fatalf("QEMU did not exit within %v: %s", within, why)
	}
}

// powerCut kills QEMU outright and waits until it is gone, so the image may be read.
func (v *vm) powerCut() {
	v.proc.Cmd.Process.Kill()
	<-v.exited
}

// bootFiles reads every file of an image's boot partition.
func bootFiles(t *testing.T, img string) map[string][]byte {
	t.Helper()
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return readFS(t, d, 1)
}

// bootState parses one copy of the boot state in an image.
func bootState(t *testing.T, img string, copy int) (bootstate.State, error) {
	t.Helper()
	return bootstate.Parse(bootFiles(t, img)["/"+bootstate.Files[copy]])
}

// setBootFile replaces a file of an image's boot partition (creating it if missing): to set
// a boot state before a boot, or to leave one torn as a power cut during a write would.
func setBootFile(t *testing.T, img, name string, data []byte) {
	t.Helper()
	d, err := diskfs.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("/"+name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", name, err)
	}
	if got := bootFiles(t, img)["/"+name]; string(got) != string(data) {
		t.Fatalf("%s reads back as %q, want %q", name, got, data)
	}
}
