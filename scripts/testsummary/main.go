// Command testsummary runs `go test -json …` and turns its event stream into what a developer
// and CI need: the output of every failed test as soon as it fails, every skip with its
// reason, one line per package, and a last line that counts the tests:
//
//	tests: 812 passed, 0 failed, 0 skipped
//
// CI reads that line. A test counts once: subtests count, a parent with subtests counts only
// when it fails (or skips) by itself. A package that fails without a failed test (it does not
// build, TestMain exits, the binary times out or crashes) counts as one failure.
//
// The exit status is 1 when anything failed, when the command failed, or, under CI=true,
// when any test was skipped: CI runs every test. The -json flag is the caller's job:
//
//	go run ./scripts/testsummary -- go test -json -race ./...
//
// It is a build tool: standard library only, nothing from the project.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: testsummary -- go test -json [flags] [packages]")
		os.Exit(2)
	}
	os.Exit(run(args, os.Getenv("CI") == "true", os.Stdout, os.Stderr))
}

// run runs the command, summarises its stdout on out and returns the exit status.
func run(args []string, ci bool, out, errOut io.Writer) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(errOut, "testsummary: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(errOut, "testsummary: %v\n", err)
		return 1
	}
	s := newSummary(out)
	readErr := s.read(stdout)
	waitErr := cmd.Wait()
	if readErr != nil {
		fmt.Fprintf(out, "testsummary: reading the test events: %v\n", readErr)
	}
	var exit *exec.ExitError
	cmdFailed := waitErr != nil
	if cmdFailed && !errors.As(waitErr, &exit) {
		fmt.Fprintf(out, "testsummary: %s: %v\n", args[0], waitErr)
	}
	c := s.finish()
	status := 0
	if c.failed > 0 || cmdFailed || readErr != nil {
		status = 1
	}
	if cmdFailed && c.failed == 0 {
		fmt.Fprintf(out, "%s exited with %v though no test failed: see its messages above\n", strings.Join(args, " "), waitErr)
	}
	if ci && c.skipped > 0 {
		fmt.Fprintf(out, "CI=true: %d tests skipped; CI must run every test\n", c.skipped)
		status = 1
	}
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", c.passed, c.failed, c.skipped)
	return status
}

// event is one line of `go test -json` (cmd/test2json, and the build events of go test).
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	FailedBuild string
	ImportPath  string
}

// maxOutput bounds the output kept for one test that is still running: a failure shows the
// newest part, with a note of how much was left out.
const maxOutput = 1 << 20

type output struct {
	chunks  []string
	size    int
	dropped int // bytes left out at the front
}

func (o *output) add(s string) {
	o.chunks = append(o.chunks, s)
	o.size += len(s)
	for o.size > maxOutput && len(o.chunks) > 1 {
		o.size -= len(o.chunks[0])
		o.dropped += len(o.chunks[0])
		o.chunks[0] = ""
		o.chunks = o.chunks[1:]
	}
}

// text is the output without test2json's framing lines (=== RUN, PAUSE, CONT, NAME).
func (o *output) text() string {
	var b strings.Builder
	if o.dropped > 0 {
		fmt.Fprintf(&b, "    [... %d bytes of earlier output left out ...]\n", o.dropped)
	}
	for _, l := range strings.SplitAfter(strings.Join(o.chunks, ""), "\n") {
		if l == "" || strings.HasPrefix(l, "=== ") {
			continue
		}
		b.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteString("\n")
		}
	}
	return b.String()
}

type test struct {
	pkg, name string
	out       output
	result    string // pass, fail, skip; "" while running
}

type pkg struct {
	out      output // output outside any test
	tests    map[string]*test
	order    []string
	result   string
	failures int // failed tests printed
}

type summary struct {
	w        io.Writer
	pkgs     map[string]*pkg
	order    []string
	builds   map[string]*output // build output by ImportPath
	printed  map[string]bool    // builds whose output was shown
	pkgFails []string           // packages that failed without a failed test
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, pkgs: map[string]*pkg{}, builds: map[string]*output{}, printed: map[string]bool{}}
}

func (s *summary) pkg(name string) *pkg {
	p := s.pkgs[name]
	if p == nil {
		p = &pkg{tests: map[string]*test{}}
		s.pkgs[name] = p
		s.order = append(s.order, name)
	}
	return p
}

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event: show it as it is rather than lose it.
			fmt.Fprintf(s.w, "%s\n", line)
			continue
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	switch e.Action {
	case "build-output":
		o := s.builds[e.ImportPath]
		if o == nil {
			o = &output{}
			s.builds[e.ImportPath] = o
		}
		o.add(e.Output)
		return
	case "build-fail":
		s.showBuild(e.ImportPath)
		return
	}
	if e.Package == "" {
		return
	}
	p := s.pkg(e.Package)
	if e.Test == "" {
		switch e.Action {
		case "output":
			p.out.add(e.Output)
		case "pass":
			p.result = "pass"
			fmt.Fprintf(s.w, "ok    %s %.1fs\n", e.Package, e.Elapsed)
		case "skip":
			p.result = "skip" // no test files
		case "fail":
			p.result = "fail"
			s.packageFailed(e, p)
		}
		return
	}
	t := p.tests[e.Test]
	if t == nil {
		t = &test{pkg: e.Package, name: e.Test}
		p.tests[e.Test] = t
		p.order = append(p.order, e.Test)
	}
	switch e.Action {
	case "output":
		t.out.add(e.Output)
	case "pass":
		t.result = "pass"
		t.out = output{}
	case "skip":
		t.result = "skip"
		fmt.Fprintf(s.w, "SKIP  %s %s\n%s", e.Package, e.Test, indent(t.out.text()))
		t.out = output{}
	case "fail":
		t.result = "fail"
		s.testFailed(p, t, fmt.Sprintf("%.1fs", e.Elapsed))
	}
}

func (s *summary) testFailed(p *pkg, t *test, how string) {
	fmt.Fprintf(s.w, "FAIL  %s %s (%s)\n%s", t.pkg, t.name, how, indent(t.out.text()))
	p.failures++
	t.out = output{}
}

func (s *summary) showBuild(importPath string) {
	if s.printed[importPath] {
		return
	}
	s.printed[importPath] = true
	o := s.builds[importPath]
	if o == nil {
		return
	}
	fmt.Fprintf(s.w, "BUILD FAILED  %s\n%s", importPath, indent(o.text()))
}

// packageFailed shows why a package failed: tests still running when its binary ended (a
// timeout or a crash) failed with it, and what the binary printed outside the tests.
func (s *summary) packageFailed(e event, p *pkg) {
	for _, name := range p.order {
		if t := p.tests[name]; t.result == "" {
			t.result = "fail"
			s.testFailed(p, t, "did not finish")
		}
	}
	if e.FailedBuild != "" {
		s.showBuild(e.FailedBuild)
	}
	fmt.Fprintf(s.w, "FAIL  %s (package, %.1fs)\n%s", e.Package, e.Elapsed, indent(p.out.text()))
	p.out = output{}
	if p.failures == 0 {
		s.pkgFails = append(s.pkgFails, e.Package)
	}
}

type counts struct{ passed, failed, skipped int }

// finish lists what failed and was skipped and returns the counts.
func (s *summary) finish() counts {
	var c counts
	var failed, skipped []string
	for _, name := range s.order {
		p := s.pkgs[name]
		if p.result == "" {
			// The stream ended inside the package: whatever ran did not finish.
			s.packageFailed(event{Package: name}, p)
		}
		for _, tn := range p.order {
			t := p.tests[tn]
			if p.coveredBelow(tn, t.result) {
				continue
			}
			switch t.result {
			case "pass":
				c.passed++
			case "skip":
				c.skipped++
				skipped = append(skipped, name+" "+tn)
			default:
				c.failed++
				failed = append(failed, name+" "+tn)
			}
		}
	}
	c.failed += len(s.pkgFails)
	if c.failed > 0 {
		fmt.Fprintln(s.w, "\nfailed:")
		for _, f := range failed {
			fmt.Fprintf(s.w, "    %s\n", f)
		}
		for _, f := range s.pkgFails {
			fmt.Fprintf(s.w, "    %s (the package, not one test)\n", f)
		}
	}
	if c.skipped > 0 {
		fmt.Fprintln(s.w, "\nskipped (see why above):")
		for _, f := range skipped {
			fmt.Fprintf(s.w, "    %s\n", f)
		}
	}
	return c
}

// coveredBelow reports whether test name has subtests and is counted through them: it passed
// (its subtests are the tests), or one of them ended as it did.
func (p *pkg) coveredBelow(name, result string) bool {
	parent := false
	for _, other := range p.order {
		if strings.HasPrefix(other, name+"/") {
			parent = true
			if p.tests[other].result == result {
				return true
			}
		}
	}
	return parent && result == "pass"
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l == "" {
			continue
		}
		b.WriteString("    ")
		b.WriteString(l)
	}
	return b.String()
}
