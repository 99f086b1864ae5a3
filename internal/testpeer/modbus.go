package testpeer

import (
	_ "embed"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

//go:embed testdata/mbserver.py
var mbserver []byte

// Modbus is a running pymodbus server (testdata/mbserver.py) serving a register map.
type Modbus struct {
	// Addr is host:port for TCP; Port is the client's end of the pty pair for RTU.
	Addr string
	Port string
	Map  string // the map file; SetMap rewrites it and the server reloads it
	log  string
	Proc *Proc
}

// RequireMbpoll returns the path of Debian's mbpoll, or stops the test as Require does.
func RequireMbpoll(t testing.TB) string { return Require(t, "mbpoll", "mbpoll") }

func requirePymodbus(t testing.TB) string {
	t.Helper()
	py := Require(t, "/usr/bin/python3", "python3")
	if out, err := exec.Command(py, "-c", "import pymodbus.server, pymodbus.datastore").CombinedOutput(); err != nil {
		Require(t, "pymodbus-is-not-importable:"+strings.TrimSpace(string(out)), "python3-pymodbus")
	}
	return py
}

func (m *Modbus) start(t testing.TB, mapJSON string, args ...string) {
	t.Helper()
	py := requirePymodbus(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "mbserver.py")
	if err := os.WriteFile(script, mbserver, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Map, m.log = filepath.Join(dir, "map.json"), filepath.Join(dir, "requests.log")
	if err := os.WriteFile(m.Map, []byte(mapJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Proc = Start(t, py, append([]string{script, "--map", m.Map, "--log", m.log}, args...)...)
	Eventually(t, 30*time.Second, "the pymodbus server to start", func() bool {
		return strings.Contains(m.Proc.Output(), "ready")
	})
}

// StartModbusTCP serves mapJSON (the format mbserver.py documents) over Modbus TCP on a free
// loopback port. The server stops when the test ends.
func StartModbusTCP(t testing.TB, mapJSON string) *Modbus {
	t.Helper()
	return StartModbusTCPAt(t, mapJSON, "127.0.0.1:"+strconv.Itoa(FreePort(t)))
}

// StartModbusTCPAt is StartModbusTCP on a given loopback address (a restarted server).
func StartModbusTCPAt(t testing.TB, mapJSON, addr string) *Modbus {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	m := &Modbus{Addr: addr}
	m.start(t, mapJSON, "--tcp", port)
	WaitTCP(t, m.Addr, 30*time.Second)
	return m
}

// StartModbusRTU serves mapJSON over Modbus RTU on one end of a socat pty pair; the client
// opens m.Port, the other end.
func StartModbusRTU(t testing.TB, mapJSON string, baud int) *Modbus {
	t.Helper()
	socat := Require(t, "socat", "socat")
	requirePymodbus(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	Start(t, socat, "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	Eventually(t, 30*time.Second, "socat's pty pair", func() bool {
		_, ea := os.Stat(a)
		_, eb := os.Stat(b)
		return ea == nil && eb == nil
	})
	m := &Modbus{Port: b}
	m.start(t, mapJSON, "--rtu", a, "--baud", strconv.Itoa(baud))
	return m
}

// SetMap replaces the served registers; the server picks the change up within a moment.
func (m *Modbus) SetMap(t testing.TB, mapJSON string) {
	t.Helper()
	tmp := m.Map + ".tmp"
	if err := os.WriteFile(tmp, []byte(mapJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, m.Map); err != nil {
		t.Fatal(err)
	}
}

// Requests lists the requests that reached a unit so far, each "UNIT FC ADDRESS COUNT".
func (m *Modbus) Requests(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(m.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// StartModbusRTUOverTCP serves mapJSON over RTU framing behind a TCP "gateway" (socat joining
// a loopback port to the server's pty), as a serial-to-Ethernet converter does; m.Addr is the
// gateway's address.
func StartModbusRTUOverTCP(t testing.TB, mapJSON string) *Modbus {
	t.Helper()
	socat := Require(t, "socat", "socat")
	requirePymodbus(t)
	a := filepath.Join(t.TempDir(), "server")
	port := strconv.Itoa(FreePort(t))
	Start(t, socat, "pty,raw,echo=0,link="+a, "tcp-listen:"+port+",bind=127.0.0.1,reuseaddr")
	Eventually(t, 30*time.Second, "socat's pty", func() bool { _, err := os.Stat(a); return err == nil })
	m := &Modbus{Addr: "127.0.0.1:" + port}
	// No WaitTCP: socat serves one connection, the client's, and ends when it closes.
	m.start(t, mapJSON, "--rtu", a)
	return m
}
