package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartSnmpsim runs Debian's snmpsimd on a free UDP port of 127.0.0.1 serving the given
// .snmprec files (or every .snmprec file in a folder given instead of a file), waits until it
// answers, and returns its address "127.0.0.1:PORT". The community of each walk is its file
// name without .snmprec. The agent is stopped when the test ends.
func StartSnmpsim(t testing.TB, files ...string) string {
	t.Helper()
	return StartSnmpsimArgs(t, nil, files...)
}

// StartSnmpsimArgs is StartSnmpsim with extra snmpsimd arguments, such as
// "--v3-user=NAME" or "--max-varbinds=N".
func StartSnmpsimArgs(t testing.TB, args []string, files ...string) string {
	t.Helper()
	bin := Require(t, "snmpsimd", "snmpsim")
	get := Require(t, "snmpget", "snmp")

	// snmpsimd drops root and runs as nobody: its data and cache folders must be reachable by
	// that user, which t.TempDir's 0700 folders are not.
	root, err := os.MkdirTemp("", "snmpsim-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	data, cache := filepath.Join(root, "data"), filepath.Join(root, "cache")
	for _, d := range []string{root, data, cache} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}

	var communities []string
	copyWalk := func(src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("snmpsim: read walk: %v", err)
		}
		name := filepath.Base(src)
		if err := os.WriteFile(filepath.Join(data, name), b, 0o666); err != nil {
			t.Fatal(err)
		}
		communities = append(communities, strings.TrimSuffix(name, ".snmprec"))
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatalf("snmpsim: %v", err)
		}
		if !st.IsDir() {
			copyWalk(f)
			continue
		}
		walks, _ := filepath.Glob(filepath.Join(f, "*.snmprec"))
		for _, w := range walks {
			copyWalk(w)
		}
	}
	if len(communities) == 0 {
		t.Fatal("snmpsim: no .snmprec walk given")
	}

	port := FreeUDPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	argv := []string{
		"--data-dir=" + data, "--cache-dir=" + cache,
		"--agent-udpv4-endpoint=" + addr, "--logging-method=stderr",
	}
	if os.Geteuid() == 0 {
		argv = append(argv, "--process-user=nobody", "--process-group=nogroup")
	}
	argv = append(argv, args...)
	p := Start(t, bin, argv...)

	// snmpsimd indexes its walks before it answers; the first GET that comes back (even with
	// noSuchObject) shows it is ready.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(get, "-v2c", "-c", communities[0], "-t", "1", "-r", "0", addr, "1.3.6.1.2.1.1.1.0").CombinedOutput()
		if err == nil {
			break
		}
		if p.Cmd.ProcessState != nil {
			t.Fatalf("snmpsimd exited: %s", p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("snmpsimd on %s does not answer after 30s: %v %s\n%s", addr, err, out, p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return addr
}

// SnmpSet runs Debian's snmpset against an snmpsim agent (v2c, community = walk name): typ
// is snmpset's type letter ("i" integer, "s" string, "u" unsigned, …). Only objects written
// with snmpsim's writecache variation (OID|2:writecache|value=3) can be set.
func SnmpSet(t testing.TB, addr, community, oid, typ, value string) {
	t.Helper()
	set := Require(t, "snmpset", "snmp")
	out, err := exec.Command(set, "-v2c", "-c", community, "-t", "2", "-r", "2", addr, oid, typ, value).CombinedOutput()
	if err != nil {
		t.Fatalf("snmpset %s %s %s %s: %v\n%s", addr, oid, typ, value, err, out)
	}
}
