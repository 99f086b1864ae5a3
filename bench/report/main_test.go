package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A configuration that was not measured says why, in its verdict cell; one measured without a
// check still gets a row.
func TestNotMeasuredSaysWhy(t *testing.T) {
	dir := t.TempDir()
	uplink := `BenchmarkDiskBytesPerReading/held-acked/readings=30-2         	       1	 758181513 ns/op	         1.067 B/reading	       10.06 wchar-B/reading
--- FAIL: BenchmarkDiskBytesPerReading/held-broker/readings=30
    disk_bench_test.go:141: timed out | waiting for every message acknowledged
    testpeer.go:177: mosquitto output:
BenchmarkDiskBytesPerReading/held-broker/readings=100-2      	       1	2539286974 ns/op	         7.540 B/reading	       132.8 wchar-B/reading
BenchmarkDiskBytesPerReading/extra/readings=5-2      	       1	2539286974 ns/op	         7.5 B/reading
--- FAIL: BenchmarkDiskBytesPerReading
FAIL
exit status 1
FAIL	github.com/rackwatch/rackwatch/uplink	95.599s
FAIL
(exit status 1)
`
	if err := os.WriteFile(filepath.Join(dir, "uplink.txt"), []byte(uplink), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		check check
		want  string
	}{
		{check{"broker 30", "uplink", "BenchmarkDiskBytesPerReading/held-broker/readings=30", "B/reading", true, 64, "%.1f"},
			`| broker 30 | not measured | ≤ 64 | BenchmarkDiskBytesPerReading/held-broker/readings=30 failed: disk_bench_test.go:141: timed out \| waiting for every message acknowledged |`},
		{check{"broker 100", "uplink", "BenchmarkDiskBytesPerReading/held-broker/readings=100", "B/reading", true, 64, "%.1f"},
			`| broker 100 | 7.5 | ≤ 64 | met |`},
		{check{"drain/paho", "uplink", "BenchmarkDrainVsPaho", "drain/paho", false, 0.8, "%.2f"},
			`| drain/paho | not measured | ≥ 0.8 | no BenchmarkDrainVsPaho in uplink.txt; the step ended with exit status 1 |`},
		{check{"acked wrong unit", "uplink", "BenchmarkDiskBytesPerReading/held-acked/readings=30", "MB/day", true, 64, "%.1f"},
			`| acked wrong unit | not measured | ≤ 64 | no BenchmarkDiskBytesPerReading/held-acked/readings=30 without MB/day in uplink.txt; the step ended with exit status 1 |`},
		{check{"fleet", "fleet", "", "all_online_s", true, 10, "%.2f"},
			`| fleet | not measured | ≤ 10 | not run: no fleet.txt in the run's outputs |`},
	} {
		if got := c.check.row(o); got != c.want {
			t.Errorf("row:\n got %s\nwant %s", got, c.want)
		}
	}
	rows := o.unchecked([]string{"uplink.txt"}, []check{{bench: "BenchmarkDiskBytesPerReading/held-acked/readings=30", file: "uplink"}})
	if len(rows) != 2 || !strings.Contains(rows[1], "BenchmarkDiskBytesPerReading/extra/readings=5 | 7.5 B/reading, 2539286974 ns/op |") {
		t.Errorf("rows for the benchmarks no check names:\n%s", strings.Join(rows, "\n"))
	}
}

// Every fuzz target gets a row with its verdict, and the count of targets with a crasher is
// held to zero.
func TestFuzzRows(t *testing.T) {
	fuzz := `fuzz: target ./daemon/audit FuzzVerify: 15445 execs, ok
fuzz: target ./daemon/config FuzzParse: 9590 execs, crasher
fuzz: target ./daemon/web FuzzSafeNext: 0 execs, failed
fuzz: crashers in ./daemon/config.FuzzParse ./daemon/web.FuzzSafeNext
fuzz: 3 targets, 1m each, 2 with crashers, 180s
fuzz_targets=3
fuzz_crashers=2
`
	want := []string{
		"| FuzzVerify (daemon/audit) | 15445 inputs | no crasher | met |",
		"| FuzzParse (daemon/config) | 9590 inputs | no crasher | **missed**: crasher written to daemon/config/testdata/fuzz/FuzzParse |",
		"| FuzzSafeNext (daemon/web) | 0 inputs | no crasher | **missed**: failed (fuzz.log has the output) |",
	}
	if got := fuzzRows(fuzz); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fuzz.txt"), []byte(fuzz), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := check{"targets that found a crasher", "fuzz", "", "fuzz_crashers", true, 0, "%.0f"}
	if got, want := c.row(o), "| targets that found a crasher | 2 | ≤ 0 | **missed** by 2 |"; got != want {
		t.Errorf("row %s, want %s", got, want)
	}
}
