package notify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
)

// mibDirs are the shipped RACKWATCH-MIB and the two SMI modules it imports.
func mibDirs(t *testing.T) string {
	t.Helper()
	a, _ := filepath.Abs("testdata/mibs")
	b, _ := filepath.Abs("../../contrib/mibs")
	return a + ":" + b
}

// TestMIB: the shipped module passes smilint at its strictest level and net-snmp loads it.
func TestMIB(t *testing.T) {
	smilint := testpeer.Require(t, "smilint", "smitools")
	cmd := exec.Command(smilint, "-l", "6", "../../contrib/mibs/RACKWATCH-MIB.txt")
	cmd.Env = append(os.Environ(), "SMIPATH="+strings.Split(mibDirs(t), ":")[0])
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("smilint: %v\n%s", err, out)
	}
	tr := testpeer.Require(t, "snmptranslate", "snmp")
	for name, oid := range map[string]string{"rwIncidentOpened": ".1.3.6.1.4.1.32473.0.1", "rwIncidentResolved": ".1.3.6.1.4.1.32473.0.4",
		"rwIncidentRepeat": ".1.3.6.1.4.1.32473.1.15"} {
		cmd := exec.Command(tr, "-m", "RACKWATCH-MIB", "-On", "RACKWATCH-MIB::"+name)
		cmd.Env = append(os.Environ(), "MIBS=", "MIBDIRS="+mibDirs(t))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != oid {
			t.Errorf("snmptranslate %s: %v %q, want %s", name, err, out, oid)
		}
	}
}

// TestSNMPTrapd: net-snmp's snmptrapd receives the v2c trap and the v3 inform and decodes
// them with the shipped MIB into named varbinds.
func TestSNMPTrapd(t *testing.T) {
	bin := testpeer.Require(t, "snmptrapd", "snmptrapd")
	dir := t.TempDir()
	port := testpeer.FreeUDPPort(t)
	conf := filepath.Join(dir, "snmptrapd.conf")
	os.WriteFile(conf, []byte("disableAuthorization yes\ncreateUser rwuser SHA authpass12 AES privpass12\n"), 0o600)
	log := filepath.Join(dir, "traps.log")
	testpeer.StartEnv(t, []string{"MIBS=", "MIBDIRS=" + mibDirs(t), "SNMP_PERSISTENT_DIR=" + dir}, bin,
		"-f", "-n", "-Lf", log, "-C", "-c", conf, "-m", "RACKWATCH-MIB", fmt.Sprintf("udp:127.0.0.1:%d", port))
	target := fmt.Sprintf("127.0.0.1:%d", port)
	db := openDB(t, t.TempDir())
	defer db.Close()
	n, stop := start(t, db, Config{Targets: []Target{
		{Name: "v2c", Type: "snmp", Target: target, Community: "public"},
		{Name: "v3", Type: "snmp", Target: target, Version: "3", Audit: true, V3: &sensors.SNMPv3{User: "rwuser", AuthProtocol: "SHA", AuthPass: "authpass12", PrivProtocol: "AES", PrivPass: "privpass12"}},
	}, Routes: []Route{{Rule: "leak", Targets: []string{"v2c"}}, {Rule: "inlet", Targets: []string{"v3"}}}})
	defer stop()
	// A v2c trap is not answered: wait until snmptrapd listens.
	waitFor(t, "snmptrapd started", func() bool { b, _ := os.ReadFile(log); return strings.Contains(string(b), "NET-SNMP version") })
	e := event("rack12-3", Opened, "critical")
	i := event("rack12-4", Resolved, "warning")
	i.Rule, i.Device, i.Metric, i.Value, i.Threshold = "inlet", "inlet-a", "temperature", 26.5, 27.0
	// The inform goes first: once it is answered, snmptrapd surely listens for the trap,
	// which nobody answers.
	stage(t, db, n, i)
	waitFor(t, "the inform answered", func() bool { return n.Stats()[1].Sent == 1 })
	stage(t, db, n, e)
	var got string
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("snmptrapd log:\n%s\nstats %+v", b, n.Stats())
		}
	}()
	waitFor(t, "both notifications in snmptrapd's log", func() bool {
		b, _ := os.ReadFile(log)
		got = string(b)
		return strings.Count(got, "RACKWATCH-MIB::rwIncidentId.0") >= 2
	})
	for _, want := range []string{
		`.1.4.1.0 = OID: RACKWATCH-MIB::rwIncidentOpened`,
		`RACKWATCH-MIB::rwIncidentId.0 = STRING: "rack12-3"`,
		`RACKWATCH-MIB::rwIncidentEvent.0 = INTEGER: opened(1)`,
		`RACKWATCH-MIB::rwIncidentSeverity.0 = INTEGER: critical(2)`,
		`RACKWATCH-MIB::rwIncidentDevice.0 = STRING: "leak"`,
		`RACKWATCH-MIB::rwIncidentSite.0 = STRING: "dc1"`,
		`RACKWATCH-MIB::rwIncidentNode.0 = STRING: "rack12"`,
		`.1.4.1.0 = OID: RACKWATCH-MIB::rwIncidentResolved`,
		`RACKWATCH-MIB::rwIncidentId.0 = STRING: "rack12-4"`,
		`RACKWATCH-MIB::rwIncidentValue.0 = STRING: "26.5"`,
		`RACKWATCH-MIB::rwIncidentThreshold.0 = STRING: "27"`,
		`RACKWATCH-MIB::rwIncidentRepeat.0 = Gauge32: 0`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("snmptrapd log lacks %s", want)
		}
	}
	// An audit record (audit: true) as rwAuditRecord, over the inform target.
	r := audit.Record{Seq: 42, TS: "2026-12-03T10:00:00.000Z", Actor: "alice", Source: "web", Action: "relay.set", Target: "fan", Hash: strings.Repeat("0f", 32)}
	if err := n.SendAudit(context.Background(), "v3", r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the audit notification in snmptrapd's log", func() bool {
		b, _ := os.ReadFile(log)
		got = string(b)
		return strings.Contains(got, "RACKWATCH-MIB::rwAuditNode.0")
	})
	for _, want := range []string{
		`.1.4.1.0 = OID: RACKWATCH-MIB::rwAuditRecord`,
		`RACKWATCH-MIB::rwAuditSeq.0 = Gauge32: 42`,
		`RACKWATCH-MIB::rwAuditActor.0 = STRING: "alice"`,
		`RACKWATCH-MIB::rwAuditAction.0 = STRING: "relay.set"`,
		`RACKWATCH-MIB::rwAuditHash.0 = STRING: "` + r.Hash + `"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("snmptrapd log lacks %s", want)
		}
	}
}
