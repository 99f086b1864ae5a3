package modbus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/drivers/modbus"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

const typesMap = `{"units": {"1": {
  "holding": [
    {"address": 0, "type": "uint16", "value": 65534},
    {"address": 1, "type": "int16", "value": -2},
    {"address": 2, "type": "uint32", "value": 65538},
    {"address": 4, "type": "uint32", "value": 65538, "word_order": "low_first"},
    {"address": 6, "type": "int32", "value": -70000},
    {"address": 8, "type": "float32", "value": 230.5},
    {"address": 10, "type": "float32", "value": 230.5, "word_order": "low_first"},
    {"address": 12, "type": "float64", "value": -1.25},
    {"address": 16, "type": "float64", "value": -1.25, "word_order": "low_first"},
    {"address": 20, "type": "string", "value": "SMT1500", "count": 4},
    {"address": 30, "type": "uint16", "value": 7}],
  "input": [{"address": 0, "type": "int16", "value": -5}],
  "coil": [{"address": 3, "value": true}, {"address": 4, "value": false}],
  "discrete": [{"address": 0, "value": true}]}}}`

func TestTypesAndBatchingTCP(t *testing.T) {
	srv := testpeer.StartModbusTCP(t, typesMap)
	testTypesAndBatching(t, srv, modbus.Conn{Mode: "tcp", Addr: srv.Addr})
}

func TestTypesAndBatchingRTU(t *testing.T) {
	srv := testpeer.StartModbusRTU(t, typesMap, 38400)
	testTypesAndBatching(t, srv, modbus.Conn{Mode: "rtu", Addr: srv.Port, Baud: 38400})
}

func testTypesAndBatching(t *testing.T, srv *testpeer.Modbus, conn modbus.Conn) {
	bus, err := modbus.Open(conn, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	// The RTU server opens its end of the pty once started: wait for its first answer, then
	// count from there.
	testpeer.Eventually(t, 30*time.Second, "the server to answer", func() bool {
		return bus.ReadAll(context.Background(), 1, []modbus.Span{{modbus.Holding, 0, 1}})[0].Err == nil
	})
	skip := len(srv.Requests(t))
	sent := bus.Requests()
	type item struct {
		span     modbus.Span
		typ      modbus.Type
		lowFirst bool
		num      float64
		text     string
	}
	items := []item{
		{modbus.Span{modbus.Holding, 0, 1}, modbus.Uint16, false, 65534, ""},
		{modbus.Span{modbus.Holding, 1, 1}, modbus.Int16, false, -2, ""},
		{modbus.Span{modbus.Holding, 2, 2}, modbus.Uint32, false, 65538, ""},
		{modbus.Span{modbus.Holding, 4, 2}, modbus.Uint32, true, 65538, ""},
		{modbus.Span{modbus.Holding, 6, 2}, modbus.Int32, false, -70000, ""},
		{modbus.Span{modbus.Holding, 8, 2}, modbus.Float32, false, 230.5, ""},
		{modbus.Span{modbus.Holding, 10, 2}, modbus.Float32, true, 230.5, ""},
		{modbus.Span{modbus.Holding, 12, 4}, modbus.Float64, false, -1.25, ""},
		{modbus.Span{modbus.Holding, 16, 4}, modbus.Float64, true, -1.25, ""},
		{modbus.Span{modbus.Holding, 20, 4}, modbus.String, false, 0, "SMT1500"},
		{modbus.Span{modbus.Holding, 30, 1}, modbus.Uint16, false, 7, ""},
		{modbus.Span{modbus.Input, 0, 1}, modbus.Int16, false, -5, ""},
	}
	spans := make([]modbus.Span, 0, len(items)+4)
	for _, it := range items {
		spans = append(spans, it.span)
	}
	// Coils 3 and 4 are mapped, 5 is not; discrete 0 is; holding 40 is not.
	spans = append(spans, modbus.Span{modbus.Coil, 3, 2}, modbus.Span{modbus.Discrete, 0, 1},
		modbus.Span{modbus.Holding, 40, 1}, modbus.Span{modbus.Coil, 5, 1})
	res := bus.ReadAll(context.Background(), 1, spans)
	for i, it := range items {
		if res[i].Err != nil {
			t.Errorf("%v: %v", it.span, res[i].Err)
			continue
		}
		num, text, err := modbus.Decode(res[i].Regs, it.typ, it.lowFirst)
		if err != nil || num != it.num || text != it.text {
			t.Errorf("%v as %s: got %v %q %v, want %v %q", it.span, it.typ, num, text, err, it.num, it.text)
		}
	}
	n := len(items)
	if r := res[n]; r.Err != nil || len(r.Bits) != 2 || !r.Bits[0] || r.Bits[1] {
		t.Errorf("coils 3-4: %v", r)
	}
	if r := res[n+1]; r.Err != nil || len(r.Bits) != 1 || !r.Bits[0] {
		t.Errorf("discrete 0: %v", r)
	}
	for _, r := range res[n+2:] {
		var ex *modbus.Exception
		if !errors.As(r.Err, &ex) || ex.Code != 2 {
			t.Errorf("an unmapped address read as %v, want exception 2", r)
		}
	}
	// Holding 0-23 is one request, 30 and 40 one each, input 0 one, discrete 0 one; coils 3-5
	// are one request, refused for coil 5, then read again as 3-4 and 5.
	reqs := srv.Requests(t)[skip:]
	want := []string{"1 3 0 24", "1 3 30 1", "1 3 40 1", "1 4 0 1", "1 1 3 3", "1 1 3 2", "1 1 5 1", "1 2 0 1"}
	if len(reqs) != len(want) || bus.Requests()-sent != uint64(len(want)) {
		t.Fatalf("server saw %d requests %q (client sent %d), want %q", len(reqs), reqs, bus.Requests()-sent, want)
	}
	for _, w := range want {
		if !contains(reqs, w) {
			t.Errorf("no request %q among %q", w, reqs)
		}
	}
}

// A batch refused as a whole is read again span by span: only the refused span fails.
func TestExceptionInsideBatch(t *testing.T) {
	srv := testpeer.StartModbusTCP(t, `{"units": {"1": {"holding": [{"address": 0, "raw": [1, 2]}]}}}`)
	bus, err := modbus.Open(modbus.Conn{Mode: "tcp", Addr: srv.Addr}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	res := bus.ReadAll(context.Background(), 1, []modbus.Span{{modbus.Holding, 0, 1}, {modbus.Holding, 1, 1}, {modbus.Holding, 2, 1}})
	if res[0].Err != nil || res[0].Regs[0] != 1 || res[1].Err != nil || res[1].Regs[0] != 2 {
		t.Errorf("good registers: %v %v", res[0], res[1])
	}
	var ex *modbus.Exception
	if !errors.As(res[2].Err, &ex) || ex.Code != 2 {
		t.Errorf("register 2: %v, want exception 2", res[2])
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if strings.TrimSpace(l) == s {
			return true
		}
	}
	return false
}

// Three units on one RTU bus, unit 3 silent: units 1 and 2 are answered on every turn,
// and unit 3 costs one timeout per turn, not one per request.
func TestSharedRTUBusWithSilentUnit(t *testing.T) {
	srv := testpeer.StartModbusRTU(t, `{"units": {
	  "1": {"input": [{"address": 0, "type": "float32", "value": 1.5}]},
	  "2": {"input": [{"address": 0, "type": "float32", "value": 2.5}]}}}`, 19200)
	conn := modbus.Conn{Mode: "rtu", Addr: srv.Port, Baud: 19200}
	const timeout = 300 * time.Millisecond
	var buses []*modbus.Bus
	for i := 0; i < 3; i++ {
		b, err := modbus.Open(conn, timeout)
		if err != nil {
			t.Fatal(err)
		}
		buses = append(buses, b)
	}
	defer func() {
		for _, b := range buses {
			b.Close()
		}
	}()
	if buses[0] != buses[1] || buses[1] != buses[2] {
		t.Fatal("three devices on one port got different buses")
	}
	if _, err := modbus.Open(modbus.Conn{Mode: "rtu", Addr: srv.Port, Baud: 9600}, timeout); err == nil {
		t.Fatal("the same port opened at another baud rate")
	}
	bus := buses[0]
	spans := []modbus.Span{{modbus.Input, 0, 2}, {modbus.Input, 4, 2}, {modbus.Input, 8, 2}}
	// Wait until the server is up (it opens its pty after socat made it).
	testpeer.Eventually(t, 30*time.Second, "unit 1 to answer", func() bool {
		return bus.ReadAll(context.Background(), 1, spans[:1])[0].Err == nil
	})
	before := bus.Requests()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[uint8][]float64{}
	errs := map[uint8][]error{}
	const turns = 5
	for unit := uint8(1); unit <= 3; unit++ {
		wg.Add(1)
		go func(unit uint8) {
			defer wg.Done()
			for i := 0; i < turns; i++ {
				r := bus.ReadAll(context.Background(), unit, spans[:1])[0]
				mu.Lock()
				if r.Err != nil {
					errs[unit] = append(errs[unit], r.Err)
				} else {
					v, _, _ := modbus.Decode(r.Regs, modbus.Float32, false)
					got[unit] = append(got[unit], v)
				}
				mu.Unlock()
			}
		}(unit)
	}
	wg.Wait()
	for unit, want := range map[uint8]float64{1: 1.5, 2: 2.5} {
		if len(got[unit]) != turns || len(errs[unit]) != 0 {
			t.Errorf("unit %d: values %v, errors %v; want %d answers", unit, got[unit], errs[unit], turns)
		}
		for _, v := range got[unit] {
			if v != want {
				t.Errorf("unit %d read %v, want %v", unit, v, want)
			}
		}
	}
	if len(errs[3]) != turns || !errors.Is(errs[3][0], modbus.ErrTimeout) {
		t.Errorf("silent unit 3: errors %v, want %d timeouts", errs[3], turns)
	}
	// A silent unit's turn with three spans in three requests stops at the first timeout.
	mid := bus.Requests()
	res := bus.ReadAll(context.Background(), 3, spans)
	if n := bus.Requests() - mid; n != 1 {
		t.Errorf("a silent unit's turn sent %d requests, want 1", n)
	}
	for _, r := range res {
		if !errors.Is(r.Err, modbus.ErrTimeout) {
			t.Errorf("silent unit: %v, want a timeout", r)
		}
	}
	if n := bus.Requests() - before; n != 3*turns+1 {
		t.Errorf("%d requests, want %d", n, 3*turns+1)
	}
}

// The connection comes back after the server restarts.
func TestReconnectTCP(t *testing.T) {
	m := `{"units": {"1": {"holding": [{"address": 0, "raw": [42]}]}}}`
	srv := testpeer.StartModbusTCP(t, m)
	bus, err := modbus.Open(modbus.Conn{Mode: "tcp", Addr: srv.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	read := func() error {
		return bus.ReadAll(context.Background(), 1, []modbus.Span{{modbus.Holding, 0, 1}})[0].Err
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	srv.Proc.Stop()
	if err := read(); err == nil {
		t.Fatal("read from a stopped server")
	}
	srv2 := testpeer.StartModbusTCPAt(t, m, srv.Addr)
	_ = srv2
	testpeer.Eventually(t, 30*time.Second, "the bus to reconnect", func() bool { return read() == nil })
}

// RTU frames through a TCP gateway: the request carries the unit id and a CRC, no MBAP header.
func TestRTUOverTCP(t *testing.T) {
	srv := testpeer.StartModbusRTUOverTCP(t, `{"units": {"5": {"holding": [{"address": 3, "type": "int32", "value": -123456}]}}}`)
	bus, err := modbus.Open(modbus.Conn{Mode: "rtuovertcp", Addr: srv.Addr, Baud: 9600}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	var r modbus.Result
	testpeer.Eventually(t, 30*time.Second, "the gateway to answer", func() bool {
		r = bus.ReadAll(context.Background(), 5, []modbus.Span{{modbus.Holding, 3, 2}})[0]
		return r.Err == nil
	})
	if v, _, _ := modbus.Decode(r.Regs, modbus.Int32, false); v != -123456 {
		t.Errorf("read %v, want -123456", v)
	}
}
