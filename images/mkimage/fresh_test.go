package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/internal/upsemu"
)

// TestFreshClone runs `make image` as a new machine would: in a clone of the repository with an
// empty module cache, then boots the image in QEMU. The clone is of the committed HEAD, so
// uncommitted changes are not part of it. Modules come through GOPROXY from this machine's
// download cache first (offline when it has them, the usual proxy otherwise); the build cache
// is shared, which only saves compiling.
func TestFreshClone(t *testing.T) {
	git := testpeer.Require(t, "git", "git")
	mk := testpeer.Require(t, "make", "make")
	qemu := requireQEMU(t)
	root := moduleRoot(t)
	// The kernel module must be in the download cache that the clone uses as its proxy.
	kernel, err := moduleKernel()
	if err != nil {
		t.Fatal(err)
	}
	goenv := func(name string) string {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	proxy := "file://" + filepath.Join(goenv("GOMODCACHE"), "cache", "download")
	if p := goenv("GOPROXY"); p != "" && p != "off" {
		proxy += "," + p
	}
	// -modcacherw: the module cache is read-only otherwise, and TempDir could not remove it.
	goflags := strings.TrimSpace("-modcacherw " + goenv("GOFLAGS"))

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	modcache := filepath.Join(dir, "modcache")
	if out, err := exec.Command(git, "clone", "--quiet", root, src).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		// A make test that runs this must not hand its own make's flags or jobserver down.
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GOMODCACHE", "GOPROXY", "GOFLAGS":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOMODCACHE="+modcache, "GOPROXY="+proxy, "GOFLAGS="+goflags)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, mk, "image")
	cmd.Dir = src
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image in a fresh clone: %v\n%s", err, out)
	}
	t.Logf("make image in a fresh clone with an empty module cache: %v", time.Since(start).Round(100*time.Millisecond))

	// The kernel came from the clone's module cache and reached slot A whole.
	if m, _ := filepath.Glob(filepath.Join(modcache, "github.com", "gokrazy", "kernel.arm64@*", "vmlinuz")); len(m) != 1 {
		t.Errorf("the clone's module cache has %d gokrazy kernels, want 1", len(m))
	}
	img := filepath.Join(src, "images", "out", "rackwatch-arm64.img")
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	slot := readFS(t, d, 2)
	d.Close()
	want, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 1<<20 || !bytes.Equal(slot["/vmlinuz"], want) {
		t.Fatalf("/vmlinuz in slot A: %d bytes, want the module's %d", len(slot["/vmlinuz"]), len(want))
	}

	v := startVM(t, qemu, vmConfig{image: img, snapshot: true, mqttPort: testpeer.FreePort(t), upsSock: serveUPS(t, upsemu.New())})
	bootStart := time.Now()
	v.waitHTTP(t, "/api/v1/status", 60*time.Second)
	t.Logf("the fresh image's status page answered %v after QEMU started", time.Since(bootStart).Round(100*time.Millisecond))
}
