package spbpb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// TestGeneratedUpToDate regenerates the Go code from the vendored .proto and compares it with
// the committed file, so neither can change without the other.
func TestGeneratedUpToDate(t *testing.T) {
	testpeer.Require(t, "protoc", "protobuf-compiler")
	dir := t.TempDir()
	cmd := exec.Command("sh", "gen.sh", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "sparkplug_b.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("sparkplug_b.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("sparkplug_b.pb.go differs from what third_party/tahu/sparkplug_b.proto generates: run go generate ./uplink/sparkplug/spbpb")
	}
}
