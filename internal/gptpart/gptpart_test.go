package gptpart

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFindIn reads a fake /sys/class/block made of uevent files as the kernel writes them.
func TestFindIn(t *testing.T) {
	sys := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=1\nPARTNAME=rackwatch-boot\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=2\nPARTNAME=rackwatch-a\n",
		"vda4": "MAJOR=254\nMINOR=4\nDEVNAME=vda4\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=4\nPARTNAME=rackwatch-data\n",
	} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		if err := os.WriteFile(filepath.Join(sys, name, "uevent"), []byte(uevent), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"rackwatch-data": "/dev/vda4", "rackwatch-a": "/dev/vda2", "rackwatch-boot": "/dev/vda1"} {
		if got, err := FindIn(sys, name); err != nil || got != want {
			t.Errorf("FindIn(%s) = %q, %v; want %s", name, got, err, want)
		}
	}
	for _, name := range []string{"other", "rackwatch-b", ""} {
		if got, err := FindIn(sys, name); err == nil {
			t.Errorf("FindIn(%q) = %q, want an error", name, got)
		}
	}
	if _, err := FindIn(filepath.Join(sys, "missing"), "rackwatch-data"); err == nil {
		t.Error("a missing /sys/class/block gave no error")
	}
}
