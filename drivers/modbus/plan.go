package modbus

import "sort"

// Table is one of the four Modbus data tables.
type Table uint8

const (
	Holding  Table = iota // FC03 read, FC06 write
	Input                 // FC04
	Coil                  // FC01 read, FC05 write
	Discrete              // FC02
)

// ParseTable reads a config's table name; "" is holding.
func ParseTable(s string) (Table, bool) {
	switch s {
	case "", "holding":
		return Holding, true
	case "input":
		return Input, true
	case "coil":
		return Coil, true
	case "discrete":
		return Discrete, true
	}
	return 0, false
}

func (t Table) String() string {
	return [...]string{"holding", "input", "coil", "discrete"}[t]
}

// Bits reports whether the table holds single bits rather than 16-bit registers.
func (t Table) Bits() bool { return t == Coil || t == Discrete }

// Protocol limits of one read request (Modbus Application Protocol 1.1b3, 6.1 to 6.4).
const (
	MaxRegisters = 125
	MaxBits      = 2000
)

// Span is a run of addresses in one table that a reading needs.
type Span struct {
	Table Table
	Addr  uint16
	Count uint16
}

func (s Span) end() int { return int(s.Addr) + int(s.Count) }

// Batch is one read request and the spans it answers.
type Batch struct {
	Span
	// Members are indexes into the spans given to Plan.
	Members []int
}

// Plan groups spans into as few read requests as the protocol allows without reading an
// address no span names: a device may answer a read that crosses an unmapped address with an
// exception for the whole request, so only touching or overlapping spans share a request.
// Batches come out ordered by table and address, which keeps the requests of one poll the
// same from poll to poll.
func Plan(spans []Span) []Batch {
	idx := make([]int, 0, len(spans))
	for i, s := range spans {
		if s.Count > 0 {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool {
		sa, sb := spans[idx[a]], spans[idx[b]]
		if sa.Table != sb.Table {
			return sa.Table < sb.Table
		}
		return sa.Addr < sb.Addr
	})
	var out []Batch
	for _, i := range idx {
		s := spans[i]
		limit := MaxRegisters
		if s.Table.Bits() {
			limit = MaxBits
		}
		if n := len(out); n > 0 {
			b := &out[n-1]
			end := b.end()
			if s.end() > end {
				end = s.end()
			}
			if b.Table == s.Table && int(s.Addr) <= b.end() && end-int(b.Addr) <= limit {
				b.Count = uint16(end - int(b.Addr))
				b.Members = append(b.Members, i)
				continue
			}
		}
		out = append(out, Batch{Span: s, Members: []int{i}})
	}
	return out
}
