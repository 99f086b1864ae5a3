package sparkplug

import (
	"math"
	"sort"
	"time"

	"github.com/rackwatch/rackwatch/uplink/sparkplug/spbpb"
	"google.golang.org/protobuf/proto"
)

// Metric is one reading as the node reports it: Device is the Sparkplug device, Name the
// metric within it.
type Metric struct {
	Device, Name string
	Value        any    // float64, float32, int, int64, uint64, bool, string, or nil (no value)
	Unit         string // the birth's engUnit property
	Quality      string // "good", "stale" or "error": the Quality property
	TS           time.Time
}

// Names and aliases of the edge node's own metrics. Aliases of device metrics start after
// them; an alias is never reused within a process, so a host's alias map stays valid across
// device rebirths.
const (
	rebirthName  = "Node Control/Rebirth"
	bdSeqName    = "bdSeq"
	rebirthAlias = 1
	firstAlias   = 2
)

// Quality codes of the Quality property, as Ignition and other hosts read them.
const (
	qualityGood  = 192
	qualityStale = 500
	qualityBad   = 0
)

func qualityCode(q string) uint32 {
	switch q {
	case "", "good":
		return qualityGood
	case "stale":
		return qualityStale
	}
	return qualityBad
}

// entry is the latest state of one device metric.
type entry struct {
	alias    uint64
	datatype spbpb.DataType
	value    any
	unit     string
	quality  uint32
	ts       uint64
	dirty    bool // changed since it was last published
}

// device is one Sparkplug device: its metrics by name, and whether it needs a DBIRTH.
type device struct {
	metrics map[string]*entry
	birth   bool // not born on this session, or its metric set or a datatype changed
	dirty   bool // some metric is dirty
}

// datatypeOf maps a value to its Sparkplug datatype; ok is false for a nil value.
func datatypeOf(v any) (spbpb.DataType, bool) {
	switch v.(type) {
	case float64:
		return spbpb.DataType_Double, true
	case float32:
		return spbpb.DataType_Float, true
	case int, int64, int32:
		return spbpb.DataType_Int64, true
	case uint64, uint32:
		return spbpb.DataType_UInt64, true
	case bool:
		return spbpb.DataType_Boolean, true
	case string:
		return spbpb.DataType_String, true
	}
	return spbpb.DataType_Unknown, false
}

// setValue fills m's value from v of datatype dt; a nil (or unmappable) v is is_null.
func setValue(m *spbpb.Payload_Metric, dt spbpb.DataType, v any) {
	switch x := v.(type) {
	case float64:
		if dt == spbpb.DataType_Double {
			m.Value = &spbpb.Payload_Metric_DoubleValue{DoubleValue: x}
			return
		}
	case float32:
		if dt == spbpb.DataType_Float {
			m.Value = &spbpb.Payload_Metric_FloatValue{FloatValue: x}
			return
		}
	case int:
		m.Value = &spbpb.Payload_Metric_LongValue{LongValue: uint64(int64(x))}
		return
	case int64:
		m.Value = &spbpb.Payload_Metric_LongValue{LongValue: uint64(x)}
		return
	case int32:
		m.Value = &spbpb.Payload_Metric_LongValue{LongValue: uint64(int64(x))}
		return
	case uint64:
		m.Value = &spbpb.Payload_Metric_LongValue{LongValue: x}
		return
	case uint32:
		m.Value = &spbpb.Payload_Metric_LongValue{LongValue: uint64(x)}
		return
	case bool:
		m.Value = &spbpb.Payload_Metric_BooleanValue{BooleanValue: x}
		return
	case string:
		m.Value = &spbpb.Payload_Metric_StringValue{StringValue: x}
		return
	}
	m.IsNull = proto.Bool(true)
}

// same tells whether two values publish the same; NaN equals NaN so that a NaN reading is
// not reported on every pass.
func same(a, b any) bool {
	if fa, ok := a.(float64); ok {
		if fb, ok := b.(float64); ok {
			return fa == fb || (math.IsNaN(fa) && math.IsNaN(fb))
		}
		return false
	}
	return a == b
}

func ms(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixMilli())
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// metricPB is e as a payload metric: with name, datatype and properties in a birth, by alias
// alone with its quality in data.
func metricPB(name string, e *entry, birth bool) *spbpb.Payload_Metric {
	m := &spbpb.Payload_Metric{Alias: proto.Uint64(e.alias), Datatype: proto.Uint32(uint32(e.datatype))}
	if e.ts != 0 {
		m.Timestamp = proto.Uint64(e.ts)
	}
	keys := []string{"Quality"}
	vals := []*spbpb.Payload_PropertyValue{{Type: proto.Uint32(uint32(spbpb.DataType_Int32)),
		Value: &spbpb.Payload_PropertyValue_IntValue{IntValue: e.quality}}}
	if birth {
		m.Name = proto.String(name)
		if e.unit != "" {
			keys = append(keys, "engUnit")
			vals = append(vals, &spbpb.Payload_PropertyValue{Type: proto.Uint32(uint32(spbpb.DataType_String)),
				Value: &spbpb.Payload_PropertyValue_StringValue{StringValue: e.unit}})
		}
	}
	m.Properties = &spbpb.Payload_PropertySet{Keys: keys, Values: vals}
	setValue(m, e.datatype, e.value)
	return m
}

func bdSeqMetric(bd uint64, now uint64) *spbpb.Payload_Metric {
	return &spbpb.Payload_Metric{Name: proto.String(bdSeqName), Timestamp: proto.Uint64(now),
		Datatype: proto.Uint32(uint32(spbpb.DataType_Int64)),
		Value:    &spbpb.Payload_Metric_LongValue{LongValue: bd}}
}
