// Package megatec speaks the Megatec/Q1 serial UPS protocol ("Q1", "F", "I" and the instant
// commands) on any io.ReadWriter, and maps the replies to NUT variable names exactly as NUT's
// nutdrv_qx "megatec" subdriver does (drivers/nutdrv_qx_megatec.c, nutdrv_qx_blazer-common.c
// and nutdrv_qx.c in networkupstools/nut), so that rackwatch and upsc agree on a UPS.
//
// Frames:
//
//	Q1\r -> (MMM.M NNN.N PPP.P QQQ RR.R S.SS TT.T b7b6b5b4b3b2b1b0\r
//	F\r  -> #MMM.M QQQ SS.SS RR.R\r
//	I\r  -> #COMPANY_NAME___ UPS_MODEL_ VERSION___\r   (15, 10 and 10 characters)
//
// Where this package differs from nutdrv_qx, it is to give an operator more, never a wrong
// value, and each difference is named where it is made:
//   - a field the UPS marks as unavailable ("--.-") is reported as unavailable (nutdrv_qx
//     drops the variable); it is never 0;
//   - a reply that ends without its CR but is otherwise whole (seen on real units) is accepted;
//     nutdrv_qx calls it a short reply;
//   - a status field with fewer than 8 bits keeps the numbers of the frame and makes only the
//     status variables unavailable; nutdrv_qx refuses the whole frame;
//   - the bypass/boost/buck bit with an output/input voltage ratio outside 0.5–1.5 adds no
//     token to ups.status (nutdrv_qx fails the whole update and eventually marks the data
//     stale).
//
// It knows frames and NUT names only: nothing of serial ports (the caller opens one and sets
// its read timeout), sites, readings or MQTT. It must not import sensors/, daemon/ or uplink/.
package megatec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Errors a reply can give. They are wrapped with what was being read; test with errors.Is.
var (
	// ErrNAK: the UPS refused the command ("NAK").
	ErrNAK = errors.New("UPS answered NAK")
	// ErrEcho: the UPS echoed the command back, which is how many units say they do not know it.
	ErrEcho = errors.New("UPS echoed the command (not supported)")
	// ErrNullByte: a NUL byte in a reply (seen from USB bridges when the UPS is off).
	ErrNullByte = errors.New("null byte in reply")
	// ErrShort: the reply ended before all its fields.
	ErrShort = errors.New("short reply")
	// ErrGarbage: the reply is not of the expected shape.
	ErrGarbage = errors.New("malformed reply")
	// ErrTimeout: no (complete) reply before the deadline.
	ErrTimeout = errors.New("no reply before the deadline")
	// ErrTooLong: more bytes than any reply has, without a CR.
	ErrTooLong = errors.New("reply too long")
	// ErrUnavailable: the UPS marks the field as not available ("--.-").
	ErrUnavailable = errors.New("not available from this UPS")
	// ErrStatus: the status bits are missing or incomplete in this frame.
	ErrStatus = errors.New("status bits incomplete")
)

// Status holds the 8 status bits of a Q1 reply, b7 (first character) to b0.
type Status uint8

// The status bits, as the Megatec protocol defines them.
const (
	UtilityFail    Status = 1 << 7 // on battery
	BatteryLow     Status = 1 << 6
	BypassBoost    Status = 1 << 5 // bypass, boost or buck active; which one follows from the voltages
	UPSFailed      Status = 1 << 4
	Standby        Status = 1 << 3 // UPS type: 1 standby or line-interactive, 0 online
	TestInProgress Status = 1 << 2
	ShutdownActive Status = 1 << 1
	BeeperOn       Status = 1 << 0
)

// String renders the bits as the UPS sends them, b7 first.
func (s Status) String() string {
	return fmt.Sprintf("%08b", uint8(s))
}

// Field is one number of a reply. OK is false when the UPS marked it unavailable ("--.-").
type Field struct {
	V  float64
	OK bool
}

func (f Field) String() string {
	if !f.OK {
		return "n/a"
	}
	return strconv.FormatFloat(f.V, 'f', -1, 64)
}

// Q1 is a parsed status reply.
type Q1 struct {
	InputVoltage      Field
	InputFaultVoltage Field
	OutputVoltage     Field
	Load              Field // %
	Frequency         Field // Hz (NUT: input.frequency)
	BatteryVoltage    Field // V, per cell (S.SS) or per pack (SS.S), as the UPS sends it
	Temperature       Field // °C
	Status            Status
	// StatusBits is how many status bits the frame carried: 8 in a whole frame. With fewer,
	// Status is not to be trusted and the status variables are unavailable.
	StatusBits int
}

// StatusOK reports whether the frame carried all 8 status bits.
func (q Q1) StatusOK() bool { return q.StatusBits == 8 }

// Ratings is a parsed F reply.
type Ratings struct {
	Voltage        Field // input.voltage.nominal, V
	Current        Field // input.current.nominal, A
	BatteryVoltage Field // battery.voltage.nominal, V
	Frequency      Field // input.frequency.nominal, Hz
}

// Info is a parsed I reply, trimmed of padding. A field the UPS left blank is "".
type Info struct {
	Manufacturer string // device.mfr
	Model        string // device.model
	Firmware     string // ups.firmware
}

// checkReply rejects what is not a reply at all: NAK, an echo of cmd, NUL bytes.
func checkReply(b []byte, cmd string) error {
	if bytes.IndexByte(b, 0) >= 0 {
		return fmt.Errorf("%w (%q)", ErrNullByte, b)
	}
	s := strings.TrimRight(string(b), "\r")
	if s == "NAK" {
		return ErrNAK
	}
	if cmd != "" && s == strings.TrimRight(cmd, "\r") {
		return fmt.Errorf("%w: %q", ErrEcho, s)
	}
	return nil
}

// ParseQ1 parses a Q1 reply, with or without its trailing CR.
func ParseQ1(b []byte) (Q1, error) {
	var q Q1
	if err := checkReply(b, "Q1"); err != nil {
		return q, err
	}
	s := strings.TrimSuffix(string(b), "\r")
	if s == "" {
		return q, fmt.Errorf("%w: empty", ErrShort)
	}
	if s[0] != '(' {
		return q, fmt.Errorf("%w: Q1 reply starts with %q, not '('", ErrGarbage, s[0])
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return q, fmt.Errorf("%w: Q1 reply has byte %#02x: %q", ErrGarbage, c, s)
		}
	}
	tok := strings.Split(s[1:], " ")
	if len(tok) > 8 {
		return q, fmt.Errorf("%w: Q1 reply has %d fields, not 8: %q", ErrGarbage, len(tok), s)
	}
	fields := []*Field{&q.InputVoltage, &q.InputFaultVoltage, &q.OutputVoltage, &q.Load,
		&q.Frequency, &q.BatteryVoltage, &q.Temperature}
	// Every field before the last one received must be whole: otherwise this is noise, not
	// a frame cut short.
	for i := 0; i < len(fields) && i < len(tok)-1; i++ {
		v, err := parseNumber(tok[i])
		if err != nil {
			return q, fmt.Errorf("%w: Q1 field %d (%s): %v", ErrGarbage, i+1, q1Names[i], err)
		}
		*fields[i] = v
	}
	// A frame cut short inside the numbers is refused whole: its last number may be cut too.
	if len(tok) < 8 {
		return Q1{}, fmt.Errorf("%w: Q1 reply has %d of 8 fields: %q", ErrShort, len(tok), s)
	}
	bits := tok[7]
	if bits == "" || len(bits) > 8 || strings.Trim(bits, "01") != "" {
		return q, fmt.Errorf("%w: Q1 status field %q is not 8 bits", ErrGarbage, bits)
	}
	// Fewer than 8 bits: keep the ones there, b7 first, so a caller can log them; StatusOK
	// says not to use them.
	for i := 0; i < len(bits); i++ {
		if bits[i] == '1' {
			q.Status |= 1 << (7 - i)
		}
	}
	q.StatusBits = len(bits)
	return q, nil
}

var q1Names = []string{"input.voltage", "input.voltage.fault", "output.voltage", "ups.load",
	"input.frequency", "battery.voltage", "ups.temperature"}

// parseNumber reads one numeric field the way nutdrv_qx does (digits, '.' and nothing else),
// plus a leading '-' for a temperature below zero. A field of only '-' and '.' ("--.-") is
// the UPS saying it does not have that value.
func parseNumber(t string) (Field, error) {
	if t == "" {
		return Field{}, errors.New("empty field")
	}
	if strings.Trim(t, "-.") == "" {
		return Field{}, nil
	}
	digits := strings.TrimPrefix(t, "-")
	if digits == "" || strings.Trim(digits, "0123456789.") != "" || strings.Trim(digits, ".") == "" {
		return Field{}, fmt.Errorf("not a number: %q", t)
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil {
		return Field{}, fmt.Errorf("not a number: %q", t)
	}
	return Field{V: v, OK: true}, nil
}

// ParseF parses an F (ratings) reply.
func ParseF(b []byte) (Ratings, error) {
	var r Ratings
	if err := checkReply(b, "F"); err != nil {
		return r, err
	}
	s := strings.TrimSuffix(string(b), "\r")
	if s == "" {
		return r, fmt.Errorf("%w: empty", ErrShort)
	}
	if s[0] != '#' {
		return r, fmt.Errorf("%w: F reply starts with %q, not '#'", ErrGarbage, s[0])
	}
	tok := strings.Fields(s[1:])
	if len(tok) < 4 {
		return r, fmt.Errorf("%w: F reply has %d of 4 fields: %q", ErrShort, len(tok), s)
	}
	if len(tok) > 4 {
		return r, fmt.Errorf("%w: F reply has %d fields, not 4: %q", ErrGarbage, len(tok), s)
	}
	names := []string{"input.voltage.nominal", "input.current.nominal", "battery.voltage.nominal", "input.frequency.nominal"}
	for i, f := range []*Field{&r.Voltage, &r.Current, &r.BatteryVoltage, &r.Frequency} {
		v, err := parseNumber(tok[i])
		if err != nil {
			return r, fmt.Errorf("%w: F field %d (%s): %v", ErrGarbage, i+1, names[i], err)
		}
		*f = v
	}
	return r, nil
}

// ParseI parses an I (identity) reply: '#', then company (15), model (10) and version (10)
// at fixed places, each separated by a space, as nutdrv_qx reads them. A reply that stops
// early keeps the fields it has; one with none at all is short.
func ParseI(b []byte) (Info, error) {
	var in Info
	if err := checkReply(b, "I"); err != nil {
		return in, err
	}
	s := strings.TrimSuffix(string(b), "\r")
	if s == "" {
		return in, fmt.Errorf("%w: empty", ErrShort)
	}
	if s[0] != '#' {
		return in, fmt.Errorf("%w: I reply starts with %q, not '#'", ErrGarbage, s[0])
	}
	if len(s) > 64 {
		return in, fmt.Errorf("%w: I reply of %d bytes", ErrGarbage, len(s))
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return in, fmt.Errorf("%w: I reply has byte %#02x", ErrGarbage, c)
		}
	}
	cut := func(from, to int) string { // inclusive positions, as in nutdrv_qx's table
		if from >= len(s) {
			return ""
		}
		if to >= len(s) {
			to = len(s) - 1
		}
		return strings.Trim(s[from:to+1], "# ")
	}
	in = Info{Manufacturer: cut(1, 15), Model: cut(17, 26), Firmware: cut(28, 37)}
	if in == (Info{}) {
		return in, fmt.Errorf("%w: I reply has no fields: %q", ErrShort, s)
	}
	return in, nil
}

// UPSStatus returns ups.status as nutdrv_qx writes it: OL or OB, then LB, TRIM, BOOST,
// BYPASS, CAL, FSD in that order (ups_status_set in nutdrv_qx.c), preceded by ALARM while
// ups.alarm is set (NUT 2.8's status_commit; checked against Debian's nutdrv_qx 2.8.0).
// Bit 5 (bypass/boost/buck) becomes TRIM when output < 0.95 × input, BYPASS below 1.05 ×,
// BOOST below 1.5 ×; outside 0.5–1.5 × (or without an input voltage) it adds nothing.
func (q Q1) UPSStatus() (string, error) {
	if !q.StatusOK() {
		return "", fmt.Errorf("%w: %d of 8 bits", ErrStatus, q.StatusBits)
	}
	st := q.Status
	var out []string
	if _, alarm := q.Alarm(); alarm {
		out = append(out, "ALARM")
	}
	if st&UtilityFail != 0 {
		out = append(out, "OB")
	} else {
		out = append(out, "OL")
	}
	if st&BatteryLow != 0 {
		out = append(out, "LB")
	}
	if st&BypassBoost != 0 {
		if tok := q.bypassToken(); tok != "" {
			out = append(out, tok)
		}
	}
	if st&TestInProgress != 0 {
		out = append(out, "CAL")
	}
	if st&ShutdownActive != 0 {
		out = append(out, "FSD")
	}
	return strings.Join(out, " "), nil
}

func (q Q1) bypassToken() string {
	if !q.InputVoltage.OK || !q.OutputVoltage.OK {
		return ""
	}
	vi, vo := q.InputVoltage.V, q.OutputVoltage.V
	switch {
	case vo < 0.5*vi:
		return ""
	case vo < 0.95*vi:
		return "TRIM"
	case vo < 1.05*vi:
		return "BYPASS"
	case vo < 1.5*vi:
		return "BOOST"
	}
	return ""
}

// Alarm returns ups.alarm as nutdrv_qx sets it, and whether there is one: bit 4 (UPS
// failed) gives "UPS selftest failed!", bit 1 (shutdown active) "Shutdown imminent!".
func (q Q1) Alarm() (string, bool) {
	if !q.StatusOK() {
		return "", false
	}
	var a []string
	if q.Status&UPSFailed != 0 {
		a = append(a, "UPS selftest failed!")
	}
	if q.Status&ShutdownActive != 0 {
		a = append(a, "Shutdown imminent!")
	}
	return strings.Join(a, " "), len(a) > 0
}

// UPSType returns ups.type: "offline / line interactive" for bit 3 set, else "online".
func (q Q1) UPSType() (string, error) {
	if !q.StatusOK() {
		return "", fmt.Errorf("%w: %d of 8 bits", ErrStatus, q.StatusBits)
	}
	if q.Status&Standby != 0 {
		return "offline / line interactive", nil
	}
	return "online", nil
}

// Beeper returns ups.beeper.status: "enabled" or "disabled".
func (q Q1) Beeper() (string, error) {
	if !q.StatusOK() {
		return "", fmt.Errorf("%w: %d of 8 bits", ErrStatus, q.StatusBits)
	}
	if q.Status&BeeperOn != 0 {
		return "enabled", nil
	}
	return "disabled", nil
}

// Var is one NUT variable taken from a reply.
type Var struct {
	Name   string // NUT name, e.g. "input.voltage"
	Num    float64
	Text   string
	IsText bool
	Unit   string
	// Err is set when the reply did not give this variable a value (ErrUnavailable for a
	// "--.-" field, ErrStatus for missing status bits): it is an error reading, never a zero.
	Err error
}

// Value renders the variable as upsc prints it (nutdrv_qx's printf formats).
func (v Var) Value() string {
	if v.Err != nil {
		return "(" + v.Err.Error() + ")"
	}
	if v.IsText {
		return v.Text
	}
	switch v.Name {
	case "ups.load", "input.voltage.nominal", "input.frequency.nominal", "battery.charge":
		return strconv.FormatFloat(v.Num, 'f', 0, 64)
	case "battery.voltage":
		return strconv.FormatFloat(v.Num, 'f', 2, 64)
	}
	return strconv.FormatFloat(v.Num, 'f', 1, 64)
}

func num(name, unit string, f Field) Var {
	if !f.OK {
		return Var{Name: name, Unit: unit, Err: ErrUnavailable}
	}
	return Var{Name: name, Num: f.V, Unit: unit}
}

func text(name, s string, err error) Var {
	if err != nil {
		return Var{Name: name, IsText: true, Err: err}
	}
	return Var{Name: name, Text: s, IsText: true}
}

// Vars returns the NUT variables of a Q1 reply, in nutdrv_qx's table order. ups.alarm is
// present only when there is an alarm. battery.voltage is as the UPS sent it; see
// BatteryPacks for the voltage of the whole battery.
func (q Q1) Vars() []Var {
	vs := []Var{
		num("input.voltage", "V", q.InputVoltage),
		num("input.voltage.fault", "V", q.InputFaultVoltage),
		num("output.voltage", "V", q.OutputVoltage),
		num("ups.load", "%", roundField(q.Load, 0)),
		num("input.frequency", "Hz", q.Frequency),
		num("battery.voltage", "V", q.BatteryVoltage),
		num("ups.temperature", "°C", q.Temperature),
	}
	st, err := q.UPSStatus()
	vs = append(vs, text("ups.status", st, err))
	if a, ok := q.Alarm(); ok {
		vs = append(vs, text("ups.alarm", a, nil))
	}
	typ, err := q.UPSType()
	vs = append(vs, text("ups.type", typ, err))
	b, err := q.Beeper()
	vs = append(vs, text("ups.beeper.status", b, err))
	return vs
}

// Vars returns the NUT variables of an F reply, rounded as nutdrv_qx prints them.
func (r Ratings) Vars() []Var {
	return []Var{
		num("input.voltage.nominal", "V", roundField(r.Voltage, 0)),
		num("input.current.nominal", "A", roundField(r.Current, 1)),
		num("battery.voltage.nominal", "V", roundField(r.BatteryVoltage, 1)),
		num("input.frequency.nominal", "Hz", roundField(r.Frequency, 0)),
	}
}

// Vars returns the NUT variables of an I reply; blank fields are left out, as nutdrv_qx
// leaves them out.
func (in Info) Vars() []Var {
	var vs []Var
	for _, v := range []struct{ name, val string }{
		{"device.mfr", in.Manufacturer}, {"device.model", in.Model}, {"ups.firmware", in.Firmware},
	} {
		if v.val != "" {
			vs = append(vs, text(v.name, v.val, nil))
		}
	}
	return vs
}

// roundField rounds like C's printf("%.Nf"), which nutdrv_qx uses to store values:
// half to even on the decimal digit.
func roundField(f Field, digits int) Field {
	if !f.OK {
		return f
	}
	p := math.Pow(10, float64(digits))
	v := math.RoundToEven(f.V*p) / p
	return Field{V: v, OK: true}
}

// BatteryPacks guesses how many cells or packs the battery voltage a UPS reports stands
// for, from the nominal battery voltage, the way nutdrv_qx does (qx_initbattery): the
// largest of 120, 100, 80, 60, 48, 36, 30, 24, 18, 12, 8, 6, 4, 3, 2, 1, 0.5 whose product
// with the reported voltage is at most 1.25 × nominal, provided it is at least 0.8 × nominal.
// ok is false when no multiplier fits (nutdrv_qx then keeps 1).
func BatteryPacks(reported, nominal float64) (packs float64, ok bool) {
	if reported <= 0 || nominal <= 0 {
		return 1, false
	}
	for _, p := range []float64{120, 100, 80, 60, 48, 36, 30, 24, 18, 12, 8, 6, 4, 3, 2, 1, 0.5} {
		if p*reported > 1.25*nominal {
			continue
		}
		if p*reported < 0.8*nominal {
			return 1, false
		}
		return p, true
	}
	return 1, false
}

// BatteryCharge is nutdrv_qx's guesstimate of battery.charge (%) from the battery voltage
// when the UPS does not report a charge and no runtimecal is set (qx_battery with the
// voltage limits qx_initbattery derives from the nominal voltage): low = 104/120 × nominal,
// high = 130/120 × nominal, charge = 100 × (packs × reported − low) / (high − low), clamped
// to 0–100 and rounded to a whole percent.
func BatteryCharge(reported, packs, nominal float64) (float64, bool) {
	if nominal <= 0 || packs <= 0 {
		return 0, false
	}
	low, high := 104*nominal/120, 130*nominal/120
	c := 100 * (reported*packs - low) / (high - low)
	c = math.Max(0, math.Min(100, c))
	return math.RoundToEven(c), true
}
