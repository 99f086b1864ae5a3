package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/summary.golden")

// testdata/stream.jsonl is what `go test -json -timeout 3s ./...` printed in
// testdata/sample: passes, failures, skips, subtests, a build failure, a panic, a TestMain
// that fails with no failed test, a package without tests and a timeout.
func TestSummary(t *testing.T) {
	var out, errOut strings.Builder
	status := run([]string{"sh", "-c", "cat testdata/stream.jsonl; exit 1"}, false, &out, &errOut)
	if status != 1 {
		t.Errorf("status %d, want 1", status)
	}
	if *update {
		if err := os.WriteFile("testdata/summary.golden", []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/summary.golden")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("summary differs from testdata/summary.golden (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", out.String(), want)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	// TestPass, TestParent/ok, TestParentFailsAlone/one and /two, c.TestOK, e.TestFine.
	// TestFail, TestParent/bad, TestParentFailsAlone, TestPanics, TestHangs, and the packages
	// b (build) and e (TestMain). TestSkip, TestParent/skip.
	if last := lines[len(lines)-1]; last != "tests: 6 passed, 7 failed, 2 skipped" {
		t.Errorf("last line %q", last)
	}
	for _, must := range []string{"boom", "some context", "subtest broke", "the parent's own check",
		"cannot use \"not an int\"", "assignment to entry in nil map", "TestMain: cleanup failed",
		"panic: test timed out after 3s", "waiting for a peer that never answers", "*** mosquitto not found ***"} {
		if !strings.Contains(out.String(), must) {
			t.Errorf("the summary does not show %q", must)
		}
	}
	if strings.Contains(out.String(), "quiet when it passes") || strings.Contains(out.String(), "=== RUN") {
		t.Error("the summary shows the output of a passing test or test2json's framing")
	}
}

func TestStatus(t *testing.T) {
	const pass = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
`
	const skip = pass + `{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: no peer\n"}
{"Action":"skip","Package":"p","Test":"TestB"}
`
	for _, c := range []struct {
		name, stream string
		exit         int
		ci           bool
		status       int
		last         string
	}{
		{"all pass", pass + `{"Action":"pass","Package":"p"}`, 0, false, 0, "tests: 1 passed, 0 failed, 0 skipped"},
		{"skip", skip + `{"Action":"pass","Package":"p"}`, 0, false, 0, "tests: 1 passed, 0 failed, 1 skipped"},
		{"skip under CI=true", skip + `{"Action":"pass","Package":"p"}`, 0, true, 1, "tests: 1 passed, 0 failed, 1 skipped"},
		{"the command fails without a failed test", pass, 2, false, 1, "tests: 1 passed, 1 failed, 0 skipped"},
		{"no events, command fails", "", 1, false, 1, "tests: 0 passed, 0 failed, 0 skipped"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := t.TempDir() + "/stream"
			if err := os.WriteFile(f, []byte(c.stream), 0o644); err != nil {
				t.Fatal(err)
			}
			var out, errOut strings.Builder
			status := run([]string{"sh", "-c", "cat " + f + "; exit " + string(rune('0'+c.exit))}, c.ci, &out, &errOut)
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if status != c.status || lines[len(lines)-1] != c.last {
				t.Errorf("status %d, last line %q; want %d, %q\n%s", status, lines[len(lines)-1], c.status, c.last, out.String())
			}
		})
	}
}
