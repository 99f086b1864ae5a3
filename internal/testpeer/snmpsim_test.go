package testpeer

import (
	"os/exec"
	"strings"
	"testing"
)

func TestStartSnmpsim(t *testing.T) {
	addr := StartSnmpsim(t, "testdata/probe.snmprec")
	get := Require(t, "snmpget", "snmp")
	out, err := exec.Command(get, "-v2c", "-c", "probe", "-On", "-t", "2", "-r", "2", addr, "1.3.6.1.2.1.33.1.2.4.0").CombinedOutput()
	if err != nil {
		t.Fatalf("snmpget: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "INTEGER: 87") {
		t.Fatalf("snmpget answer %q, want INTEGER: 87", out)
	}

	SnmpSet(t, addr, "probe", "1.3.6.1.2.1.33.1.4.1.0", "i", "5")
	out, err = exec.Command(get, "-v2c", "-c", "probe", "-On", "-t", "2", "-r", "2", addr, "1.3.6.1.2.1.33.1.4.1.0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "INTEGER: 5") {
		t.Fatalf("after SnmpSet: %v %s, want INTEGER: 5", err, out)
	}
}
