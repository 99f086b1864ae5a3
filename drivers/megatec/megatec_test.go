package megatec

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// fakeUPS answers on one end of a net.Pipe (a real io.ReadWriter with deadlines) with what
// reply returns for each CR-terminated command; nil means silence. It records the commands.
type fakeUPS struct {
	mu   sync.Mutex
	cmds []string
}

func (f *fakeUPS) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func startFake(t *testing.T, reply func(cmd string) []byte) (*Conn, *fakeUPS) {
	t.Helper()
	host, ups := net.Pipe()
	f := &fakeUPS{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(ups)
		for {
			line, err := r.ReadString('\r')
			if err != nil {
				return
			}
			cmd := strings.TrimSuffix(line, "\r")
			f.mu.Lock()
			f.cmds = append(f.cmds, cmd)
			f.mu.Unlock()
			if b := reply(cmd); b != nil {
				if _, err := ups.Write(b); err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { host.Close(); ups.Close(); wg.Wait() })
	c := NewConn(host)
	c.Timeout = 2 * time.Second
	return c, f
}

type tsvLine struct {
	model, reply, source, note string
}

func readTSV(t *testing.T) []tsvLine {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "q1.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	var out []tsvLine
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			t.Fatalf("q1.tsv: %d columns in %q", len(f), l)
		}
		out = append(out, tsvLine{f[0], f[1], f[2], f[3]})
	}
	return out
}

// noCR says whether the capture's thread shows the reply came without its CR.
func (l tsvLine) noCR() bool { return strings.Contains(l.note, "no trailing CR") }

// TestGoldenCaptures sends every captured reply through a Conn as the UPS sent it (with its
// CR, or without where the capture shows none) and compares the NUT variables with
// testdata/q1.golden.
func TestGoldenCaptures(t *testing.T) {
	var out strings.Builder
	for _, l := range readTSV(t) {
		reply := []byte(l.reply)
		if !l.noCR() {
			reply = append(reply, '\r')
		}
		c, _ := startFake(t, func(string) []byte { return reply })
		c.Timeout = time.Second
		q, err := c.Q1(context.Background())
		fmt.Fprintf(&out, "# %s\n# %s\nreply: %q\n", l.model, l.source, reply)
		if err != nil {
			fmt.Fprintf(&out, "error: %v\n\n", err)
			continue
		}
		for _, v := range q.Vars() {
			fmt.Fprintf(&out, "%s: %s\n", v.Name, v.Value())
		}
		out.WriteString("\n")
	}
	golden := filepath.Join("testdata", "q1.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update once and review the file)", err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("NUT variables differ from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}

// TestCapturesOperatorView states, independently of the golden file, what an operator must
// see for the awkward captures.
func TestCapturesOperatorView(t *testing.T) {
	byModel := map[string]string{}
	for _, l := range readTSV(t) {
		byModel[l.model] = l.reply
	}
	get := func(t *testing.T, prefix string) string {
		t.Helper()
		for m, r := range byModel {
			if strings.HasPrefix(m, prefix) {
				return r
			}
		}
		t.Fatalf("no capture %q", prefix)
		return ""
	}
	vars := func(t *testing.T, reply string) map[string]Var {
		t.Helper()
		q, err := ParseQ1([]byte(reply + "\r"))
		if err != nil {
			t.Fatalf("ParseQ1(%q): %v", reply, err)
		}
		m := map[string]Var{}
		for _, v := range q.Vars() {
			m[v.Name] = v
		}
		return m
	}

	t.Run("truncated frame is an error", func(t *testing.T) {
		_, err := ParseQ1([]byte(get(t, "Vultech UPS1400VA-LFP (same log") + "\r"))
		if !errors.Is(err, ErrShort) {
			t.Fatalf("err = %v, want ErrShort", err)
		}
	})
	t.Run("NAK is an error", func(t *testing.T) {
		_, err := ParseQ1([]byte(get(t, "Vultech GS-1KVAS-RK (reply to ID") + "\r"))
		if !errors.Is(err, ErrNAK) {
			t.Fatalf("err = %v, want ErrNAK", err)
		}
	})
	t.Run("5-bit status keeps numbers, status unavailable", func(t *testing.T) {
		m := vars(t, get(t, "unknown model (reporter of issue #1978"))
		if v := m["input.voltage"]; v.Err != nil || v.Num != 231.0 {
			t.Errorf("input.voltage = %+v", v)
		}
		if v := m["battery.voltage"]; v.Err != nil || v.Num != 27.0 {
			t.Errorf("battery.voltage (24 V pack) = %+v", v)
		}
		for _, n := range []string{"ups.status", "ups.type", "ups.beeper.status"} {
			if !errors.Is(m[n].Err, ErrStatus) {
				t.Errorf("%s = %+v, want ErrStatus", n, m[n])
			}
		}
	})
	t.Run("--.- temperature is unavailable, not 0", func(t *testing.T) {
		m := vars(t, get(t, "Green Cell"))
		if v := m["ups.temperature"]; !errors.Is(v.Err, ErrUnavailable) {
			t.Errorf("ups.temperature = %+v, want ErrUnavailable", v)
		}
		if v := m["input.voltage.fault"]; v.Err != nil || v.Num != 0 {
			t.Errorf("input.voltage.fault = %+v, want 0", v)
		}
		if v := m["ups.status"]; v.Text != "OL" {
			t.Errorf("ups.status = %+v", v)
		}
	})
	t.Run("on battery with 0 V input", func(t *testing.T) {
		m := vars(t, get(t, "DigiTECH"))
		if v := m["ups.status"]; v.Text != "OB" {
			t.Errorf("ups.status = %+v, want OB", v)
		}
		if v := m["input.voltage"]; v.Err != nil || v.Num != 0 {
			t.Errorf("input.voltage = %+v, want a real 0", v)
		}
		if v := m["ups.type"]; v.Text != "offline / line interactive" {
			t.Errorf("ups.type = %+v", v)
		}
	})
	t.Run("bit 5 with equal voltages is BYPASS", func(t *testing.T) {
		m := vars(t, get(t, "Visench"))
		if v := m["ups.status"]; v.Text != "OL BYPASS" {
			t.Errorf("ups.status = %+v", v)
		}
		if v := m["ups.type"]; v.Text != "online" {
			t.Errorf("ups.type = %+v", v)
		}
	})
	t.Run("24 V pack voltage", func(t *testing.T) {
		m := vars(t, get(t, "unknown UPS behind"))
		if v := m["battery.voltage"]; v.Num != 27.1 {
			t.Errorf("battery.voltage = %+v", v)
		}
	})
}

func TestParseQ1Table(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		status string
		err    error
	}{
		{"reference example", "(215.0 195.0 230.0 014 49.0 2.27 30.0 00001000\r", "OL", nil},
		{"no CR", "(215.0 195.0 230.0 014 49.0 2.27 30.0 00001000", "OL", nil},
		{"OB LB", "(000.0 000.0 230.0 014 00.0 22.0 30.0 11001000\r", "OB LB", nil},
		{"boost", "(190.0 190.0 220.0 014 50.0 27.0 30.0 00101000\r", "OL BOOST", nil},
		{"trim", "(250.0 250.0 220.0 014 50.0 27.0 30.0 00101000\r", "OL TRIM", nil},
		{"bypass", "(230.0 230.0 230.0 014 50.0 27.0 30.0 00100000\r", "OL BYPASS", nil},
		{"bypass bit, output too low", "(230.0 230.0 100.0 014 50.0 27.0 30.0 00100000\r", "OL", nil},
		{"bypass bit on battery (0 V in)", "(000.0 000.0 230.0 014 50.0 27.0 30.0 10100000\r", "OB", nil},
		{"test and shutdown", "(230.0 230.0 230.0 014 50.0 27.0 30.0 00000110\r", "ALARM OL CAL FSD", nil},
		{"everything", "(230.0 230.0 230.0 014 50.0 27.0 30.0 11111111\r", "ALARM OB LB BYPASS CAL FSD", nil},
		{"UPS failed", "(230.0 230.0 230.0 014 50.0 27.0 30.0 00011000\r", "ALARM OL", nil},
		{"negative temperature", "(230.0 230.0 230.0 014 50.0 27.0 -5.0 00001000\r", "OL", nil},
		{"empty", "\r", "", ErrShort},
		{"lone paren", "(\r", "", ErrShort},
		{"NAK", "NAK\r", "", ErrNAK},
		{"echo", "Q1\r", "", ErrEcho},
		{"null byte", "(230.0\x00230.0\r", "", ErrNullByte},
		{"wrong lead", "#230.0 230.0 230.0 014 50.0 27.0 30.0 00001000\r", "", ErrGarbage},
		{"letters in a number", "(23O.0 230.0 230.0 014 50.0 27.0 30.0 00001000\r", "", ErrGarbage},
		{"9 status bits", "(230.0 230.0 230.0 014 50.0 27.0 30.0 000010000\r", "", ErrGarbage},
		{"status not binary", "(230.0 230.0 230.0 014 50.0 27.0 30.0 0000200\r", "", ErrGarbage},
		{"extra field", "(230.0 230.0 230.0 014 50.0 27.0 30.0 00001000 1\r", "", ErrGarbage},
		{"cut in numbers", "(230.0 230.0 230.0 014 50\r", "", ErrShort},
		{"double space", "(230.0  230.0 230.0 014 50.0 27.0 30.0 00001000\r", "", ErrGarbage},
		{"exponent", "(2e2 230.0 230.0 014 50.0 27.0 30.0 00001000\r", "", ErrGarbage},
		{"lone dot", "(. 230.0 230.0 014 50.0 27.0 30.0 00001000\r", "OL", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQ1([]byte(tc.in))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st, err := q.UPSStatus()
			if err != nil || st != tc.status {
				t.Fatalf("ups.status = %q, %v; want %q", st, err, tc.status)
			}
		})
	}
}

func TestAlarmAndFields(t *testing.T) {
	q, err := ParseQ1([]byte("(226.0 195.0 226.0 014 49.0 27.5 30.0 00011011\r"))
	if err != nil {
		t.Fatal(err)
	}
	want := Q1{
		InputVoltage: Field{226, true}, InputFaultVoltage: Field{195, true}, OutputVoltage: Field{226, true},
		Load: Field{14, true}, Frequency: Field{49, true}, BatteryVoltage: Field{27.5, true},
		Temperature: Field{30, true}, Status: UPSFailed | Standby | ShutdownActive | BeeperOn, StatusBits: 8,
	}
	if q != want {
		t.Fatalf("got %+v\nwant %+v", q, want)
	}
	if a, ok := q.Alarm(); !ok || a != "UPS selftest failed! Shutdown imminent!" {
		t.Errorf("alarm = %q, %v", a, ok)
	}
	if b, _ := q.Beeper(); b != "enabled" {
		t.Errorf("beeper = %q", b)
	}
	q.Status = 0
	if _, ok := q.Alarm(); ok {
		t.Error("alarm without bits 4 and 1")
	}
	if b, _ := q.Beeper(); b != "disabled" {
		t.Errorf("beeper = %q", b)
	}
}

func TestParseF(t *testing.T) {
	tests := []struct {
		in   string
		want Ratings
		err  error
	}{
		{"#220.0 000 024.0 50.0\r", Ratings{Field{220, true}, Field{0, true}, Field{24, true}, Field{50, true}}, nil},
		// Powersa RT3000 (nut#608): blazer refused it as short; it is whole.
		{"#220.0 013 72.00 50.0\r", Ratings{Field{220, true}, Field{13, true}, Field{72, true}, Field{50, true}}, nil},
		{"#220.0 013 72.00\r", Ratings{}, ErrShort},
		{"NAK\r", Ratings{}, ErrNAK},
		{"F\r", Ratings{}, ErrEcho},
		{"(220.0 013 72.00 50.0\r", Ratings{}, ErrGarbage},
		{"#220.0 013 72.00 50.0 1\r", Ratings{}, ErrGarbage},
		{"#220.0 0x3 72.00 50.0\r", Ratings{}, ErrGarbage},
	}
	for _, tc := range tests {
		r, err := ParseF([]byte(tc.in))
		if !errors.Is(err, tc.err) || (err == nil && r != tc.want) {
			t.Errorf("ParseF(%q) = %+v, %v; want %+v, %v", tc.in, r, err, tc.want, tc.err)
		}
	}
	r, _ := ParseF([]byte("#230.0 004 012.00 49.6\r"))
	got := map[string]string{}
	for _, v := range r.Vars() {
		got[v.Name] = v.Value()
	}
	want := map[string]string{"input.voltage.nominal": "230", "input.current.nominal": "4.0",
		"battery.voltage.nominal": "12.0", "input.frequency.nominal": "50"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("F vars = %v, want %v", got, want)
	}
}

func TestParseI(t *testing.T) {
	tests := []struct {
		in   string
		want Info
		err  error
	}{
		{"#NOT_A_LIVE_UPS  TESTING    TESTING   \r", Info{"NOT_A_LIVE_UPS", "TESTING", "TESTING"}, nil},
		// Vultech UPS1400VA-LFP (nut#2219): only a version.
		{"#                           V6.00     \r", Info{"", "", "V6.00"}, nil},
		{"#-------------   ------     VT12046Q  \r", Info{"-------------", "------", "VT12046Q"}, nil},
		{"#MEGATEC\r", Info{"MEGATEC", "", ""}, nil},
		{"#          \r", Info{}, ErrShort},
		{"NAK\r", Info{}, ErrNAK},
		{"I\r", Info{}, ErrEcho},
		{"(abc\r", Info{}, ErrGarbage},
		{"#abc\x01def\r", Info{}, ErrGarbage},
	}
	for _, tc := range tests {
		in, err := ParseI([]byte(tc.in))
		if !errors.Is(err, tc.err) || (err == nil && in != tc.want) {
			t.Errorf("ParseI(%q) = %+v, %v; want %+v, %v", tc.in, in, err, tc.want, tc.err)
		}
	}
}

func TestBatteryGuesstimation(t *testing.T) {
	tests := []struct {
		name              string
		reported, nominal float64
		packs             float64
		packsOK           bool
		charge            float64
	}{
		// nut#2219: 13.7 V on a 12 V unit: 1 pack, low 10.40 / high 13.00, charge 100.
		{"12 V unit, full", 13.7, 12, 1, true, 100},
		{"12 V unit, half", 11.7, 12, 1, true, 50},
		// nut#1279: per-cell 2.26 V on a 24 V unit: 12 cells → 27.12 V.
		{"per cell, 24 V", 2.26, 24, 12, true, 100},
		{"per cell, 24 V, low", 1.80, 24, 12, true, 15},
		{"24 V pack", 27.0, 24, 1, true, 100},
		{"nothing fits", 100, 12, 1, false, 0},
		{"picks the largest multiplier", 5, 240, 60, true, 100},
		{"no nominal", 2.26, 0, 1, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := BatteryPacks(tc.reported, tc.nominal)
			if p != tc.packs || ok != tc.packsOK {
				t.Fatalf("packs = %v, %v; want %v, %v", p, ok, tc.packs, tc.packsOK)
			}
			if !ok {
				return
			}
			c, ok := BatteryCharge(tc.reported, p, tc.nominal)
			if !ok || c != tc.charge {
				t.Fatalf("charge = %v, %v; want %v", c, ok, tc.charge)
			}
		})
	}
}

func TestConnErrors(t *testing.T) {
	frame := "(230.0 230.0 230.0 014 50.0 27.0 30.0 00001000"
	tests := []struct {
		name  string
		reply func(cmd string) []byte
		err   error
	}{
		{"silence", func(string) []byte { return nil }, ErrTimeout},
		{"echo", func(cmd string) []byte { return []byte(cmd + "\r") }, ErrEcho},
		{"NAK", func(string) []byte { return []byte("NAK\r") }, ErrNAK},
		{"garbage", func(string) []byte { return []byte("\xff\xfe#!garbage\r") }, ErrGarbage},
		{"noise then CR", func(string) []byte { return []byte("(2#9.? garbage !!\r") }, ErrGarbage},
		{"half a frame, no CR", func(string) []byte { return []byte(frame[:20]) }, ErrTimeout},
		{"endless bytes", func(string) []byte { return []byte(strings.Repeat("x", 300)) }, ErrTooLong},
		{"null byte", func(string) []byte { return []byte("\x00\r") }, ErrNullByte},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := startFake(t, tc.reply)
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			_, err := c.Q1(ctx)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestConnFrameWithoutCR(t *testing.T) {
	frame := "(227.0 120.0 000.0 000 49.9 2.28 25.0 00000001" // Powersa RT3000, 46 bytes
	c, _ := startFake(t, func(string) []byte { return []byte(frame) })
	start := time.Now()
	q, err := c.Q1(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.InputVoltage.V != 227 || !q.StatusOK() {
		t.Fatalf("q = %+v", q)
	}
	// It must not wait for the whole timeout: the quiet line ends the frame.
	if d := time.Since(start); d > c.Timeout {
		t.Fatalf("took %v", d)
	}
}

func TestConnSplitReply(t *testing.T) {
	// A reply arriving in pieces (2400 baud, USB bridges) is put back together.
	host, ups := net.Pipe()
	defer host.Close()
	defer ups.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16)
		ups.Read(buf)
		for _, part := range []string{"(230.0 230.0 ", "230.0 014 50.0 27.0", " 30.0 0000", "1000\r"} {
			ups.Write([]byte(part))
		}
	}()
	c := NewConn(host)
	q, err := c.Q1(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.Temperature.V != 30 || q.Status != Standby {
		t.Fatalf("q = %+v", q)
	}
	<-done
}

func TestCommands(t *testing.T) {
	for _, cmd := range Commands() {
		if _, err := CommandString(cmd, ""); err != nil {
			t.Errorf("%s: %v", cmd, err)
		}
	}
	tests := []struct{ cmd, arg, want string }{
		{"beeper.toggle", "", "Q"},
		{"test.battery.start.quick", "", "T"},
		{"test.battery.start.deep", "", "TL"},
		{"test.battery.stop", "", "CT"},
		{"test.battery.start", "", "T10"},
		{"test.battery.start", "120", "T02"},
		{"load.off", "", "S00R0000"},
		{"load.on", "", "C"},
		{"shutdown.stop", "", "C"},
		{"shutdown.return", "", "S.5R0003"},
		{"shutdown.return", "120", "S02R0003"},
		{"shutdown.stayoff", "", "S.5R0000"},
	}
	for _, tc := range tests {
		got, err := CommandString(tc.cmd, tc.arg)
		if err != nil || got != tc.want {
			t.Errorf("CommandString(%q, %q) = %q, %v; want %q", tc.cmd, tc.arg, got, err, tc.want)
		}
	}
	for _, bad := range [][2]string{{"test.battery.start", "10"}, {"test.battery.start", "x"}, {"shutdown.return", "9999"}, {"nope", ""}} {
		if _, err := CommandString(bad[0], bad[1]); err == nil {
			t.Errorf("CommandString(%q, %q): no error", bad[0], bad[1])
		}
	}

	t.Run("accepted by silence", func(t *testing.T) {
		c, f := startFake(t, func(string) []byte { return nil })
		if err := c.Command(context.Background(), "test.battery.start.quick", "", 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if got := f.commands(); len(got) != 1 || got[0] != "T" {
			t.Fatalf("UPS got %q", got)
		}
	})
	t.Run("refused by echo", func(t *testing.T) {
		c, _ := startFake(t, func(cmd string) []byte { return []byte(cmd + "\r") })
		err := c.Command(context.Background(), "beeper.toggle", "", time.Second)
		if !errors.Is(err, ErrEcho) {
			t.Fatalf("err = %v, want ErrEcho", err)
		}
	})
	t.Run("accepted by ACK", func(t *testing.T) {
		c, _ := startFake(t, func(cmd string) []byte { return []byte("ACK\r") })
		if err := c.Command(context.Background(), "load.on", "", time.Second); err != nil {
			t.Fatal(err)
		}
	})
}
