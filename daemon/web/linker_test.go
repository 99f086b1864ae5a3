package web

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// TestNoReflectMethod: nothing live in the daemon calls reflect's Method or MethodByName
// with a name the linker cannot see (text/template and html/template do), which makes it
// keep every exported method of every type reachable through an interface: a larger binary
// and more resident pages on the appliance. The linker marks such functions <ReflectMethod>
// in its -dumpdep output.
func TestNoReflectMethod(t *testing.T) {
	if testing.Short() {
		t.Skip("links the daemon")
	}
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		if goCmd, err = exec.LookPath("go"); err != nil {
			t.Fatalf("no go command to link the daemon with: %v", err)
		}
	}
	// The release build's settings (Makefile, images/): a cgo build links the same Go code.
	cmd := exec.Command(goCmd, "build", "-trimpath", "-ldflags=-dumpdep", "-o", filepath.Join(t.TempDir(), "rackwatch"), "../../daemon")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build -ldflags=-dumpdep ./daemon: %v\n%s", err, tail(out.String(), 2000))
	}
	marked := map[string]bool{}
	edges := 0
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		from, to, ok := strings.Cut(sc.Text(), " -> ")
		if !ok {
			continue
		}
		edges++
		for _, f := range []string{from, to} {
			if name, ok := strings.CutSuffix(f, " <ReflectMethod>"); ok {
				marked[name] = true
			}
		}
	}
	if edges < 1000 {
		t.Fatalf("the linker's -dumpdep output has %d edges; has its format changed?\n%s", edges, tail(out.String(), 2000))
	}
	if len(marked) > 0 {
		var names []string
		for n := range marked {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Errorf("functions that make the linker keep every exported method (<ReflectMethod>); "+
			"the daemon must not reach them (see daemon/web/README.md):\n  %s", strings.Join(names, "\n  "))
	}
}

func tail(s string, n int) string {
	return s[max(0, len(s)-n):]
}
