package modbus

import (
	"reflect"
	"testing"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		name  string
		spans []Span
		want  []Batch
	}{
		{"adjacent registers share a request",
			[]Span{{Input, 0, 2}, {Input, 2, 2}, {Input, 4, 2}},
			[]Batch{{Span{Input, 0, 6}, []int{0, 1, 2}}}},
		{"a gap splits, tables never mix",
			[]Span{{Holding, 10, 1}, {Holding, 0, 2}, {Input, 2, 1}, {Holding, 2, 1}},
			[]Batch{{Span{Holding, 0, 3}, []int{1, 3}}, {Span{Holding, 10, 1}, []int{0}}, {Span{Input, 2, 1}, []int{2}}}},
		{"overlap is read once",
			[]Span{{Holding, 0, 4}, {Holding, 1, 1}},
			[]Batch{{Span{Holding, 0, 4}, []int{0, 1}}}},
		{"125 registers at most",
			[]Span{{Holding, 0, 100}, {Holding, 100, 25}, {Holding, 125, 1}},
			[]Batch{{Span{Holding, 0, 125}, []int{0, 1}}, {Span{Holding, 125, 1}, []int{2}}}},
		{"2000 bits at most",
			[]Span{{Coil, 0, 1999}, {Coil, 1999, 1}, {Coil, 2000, 1}},
			[]Batch{{Span{Coil, 0, 2000}, []int{0, 1}}, {Span{Coil, 2000, 1}, []int{2}}}},
	}
	for _, tt := range tests {
		if got := Plan(tt.spans); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Plan = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		regs     []uint16
		typ      Type
		lowFirst bool
		num      float64
		text     string
	}{
		{[]uint16{0xFFFE}, Uint16, false, 65534, ""},
		{[]uint16{0xFFFE}, Int16, false, -2, ""},
		{[]uint16{0x0001, 0x0002}, Uint32, false, 65538, ""},
		{[]uint16{0x0002, 0x0001}, Uint32, true, 65538, ""},
		{[]uint16{0xFFFF, 0xFFFE}, Int32, false, -2, ""},
		{[]uint16{0x4366, 0x8000}, Float32, false, 230.5, ""},
		{[]uint16{0x8000, 0x4366}, Float32, true, 230.5, ""},
		{[]uint16{0x4059, 0, 0, 0}, Float64, false, 100, ""},
		{[]uint16{0, 0, 0, 0x4059}, Float64, true, 100, ""},
		{[]uint16{0x534D, 0x5420, 0}, String, false, 0, "SMT"},
	}
	for _, tt := range tests {
		num, text, err := Decode(tt.regs, tt.typ, tt.lowFirst)
		if err != nil || num != tt.num || text != tt.text {
			t.Errorf("Decode(%x, %s, %v) = %v, %q, %v; want %v, %q", tt.regs, tt.typ, tt.lowFirst, num, text, err, tt.num, tt.text)
		}
	}
	if _, _, err := Decode([]uint16{1}, Float32, false); err == nil {
		t.Error("a float32 from one register decoded without error")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x43, 0x66, 0x80, 0}, uint8(4), false)
	f.Fuzz(func(t *testing.T, b []byte, typ uint8, lowFirst bool) {
		regs := make([]uint16, len(b)/2)
		for i := range regs {
			regs[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		}
		Decode(regs, Type(typ%7), lowFirst)
	})
}
