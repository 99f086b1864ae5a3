package modbus

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Type is how a value is laid out in registers.
type Type uint8

const (
	Uint16 Type = iota
	Int16
	Uint32
	Int32
	Float32
	Float64
	String
)

var typeNames = [...]string{"uint16", "int16", "uint32", "int32", "float32", "float64", "string"}

func (t Type) String() string { return typeNames[t] }

// ParseType reads a config's type name; "" is uint16.
func ParseType(s string) (Type, bool) {
	if s == "" {
		return Uint16, true
	}
	for i, n := range typeNames {
		if n == s {
			return Type(i), true
		}
	}
	return 0, false
}

// Registers is how many registers a value of t takes; count is a string's length in
// registers (two characters each).
func (t Type) Registers(count int) int {
	switch t {
	case Uint32, Int32, Float32:
		return 2
	case Float64:
		return 4
	case String:
		return count
	}
	return 1
}

// Decode turns regs into a number (Num) or, for String, text. lowFirst says the device
// sends the low 16-bit word of a multi-register value first; bytes within a register are
// always big-endian, as the protocol says.
func Decode(regs []uint16, t Type, lowFirst bool) (num float64, text string, err error) {
	n := t.Registers(len(regs))
	if len(regs) < n || n == 0 {
		return 0, "", fmt.Errorf("modbus: %s needs %d registers, got %d", t, n, len(regs))
	}
	if t == String {
		b := make([]byte, 0, 2*n)
		for _, r := range regs[:n] {
			b = append(b, byte(r>>8), byte(r))
		}
		// Devices pad with NULs or spaces.
		return 0, strings.TrimRight(strings.TrimRight(string(b), "\x00"), " \x00"), nil
	}
	var u uint64
	for i := 0; i < n; i++ {
		w := regs[i]
		if lowFirst {
			w = regs[n-1-i]
		}
		u = u<<16 | uint64(w)
	}
	switch t {
	case Uint16, Uint32:
		return float64(u), "", nil
	case Int16:
		return float64(int16(u)), "", nil
	case Int32:
		return float64(int32(u)), "", nil
	case Float32:
		// The shortest decimal that is this float32 (230.1, not 230.10000610351562): the
		// device meant the former.
		f := float64(math.Float32frombits(uint32(u)))
		if g, err := strconv.ParseFloat(strconv.FormatFloat(f, 'g', -1, 32), 64); err == nil {
			f = g
		}
		return f, "", nil
	case Float64:
		return math.Float64frombits(u), "", nil
	}
	return 0, "", fmt.Errorf("modbus: unknown type %d", t)
}
