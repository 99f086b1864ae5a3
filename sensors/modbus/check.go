package modbus

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	mbdrv "github.com/rackwatch/rackwatch/drivers/modbus"
	"github.com/rackwatch/rackwatch/sensors"
)

// CheckOptions reports every mistake in a modbus device's keys, each as a *sensors.KeyError
// naming its key (and, inside registers, the entry and its key), so the config check points
// at its line.
func CheckOptions(spec Options) error {
	var errs []error
	add := func(key string, i int, field, format string, args ...any) {
		ke := &sensors.KeyError{Key: key, Err: fmt.Errorf(format, args...)}
		if i >= 0 {
			ke.In = []any{i}
			if field != "" {
				ke.In = append(ke.In, field)
			}
		}
		errs = append(errs, ke)
	}
	switch {
	case spec.Port == "" && spec.Target == "":
		add("driver", -1, "", "a modbus device needs port (RTU) or target (TCP)")
	case spec.Port != "" && spec.Target != "":
		add("target", -1, "", "give port (RTU) or target (TCP), not both")
	}
	switch spec.Transport {
	case "", "tcp":
	case "rtu_over_tcp":
		if spec.Target == "" {
			add("transport", -1, "", "transport rtu_over_tcp needs a target (the gateway's host:port)")
		}
	default:
		add("transport", -1, "", "transport is tcp or rtu_over_tcp, not %q", spec.Transport)
	}
	if spec.UnitID < 0 || spec.UnitID > 247 {
		add("unit_id", -1, "", "unit_id is 1 to 247 (0 means 1), not %d", spec.UnitID)
	}
	switch spec.Parity {
	case "", "none", "even", "odd":
	default:
		add("parity", -1, "", "parity is none, even or odd, not %q", spec.Parity)
	}
	if spec.StopBits != 0 && spec.StopBits != 1 && spec.StopBits != 2 {
		add("stop_bits", -1, "", "stop_bits is 1 or 2, not %d", spec.StopBits)
	}
	if spec.Baud < 0 {
		add("baud", -1, "", "baud must be positive")
	}
	if (spec.Parity != "" || spec.StopBits != 0) && spec.Port == "" {
		add("parity", -1, "", "parity and stop_bits apply to a serial port only")
	}
	checkOrder := func(key string, i int, field, v string) {
		if v != "" && v != "high_first" && v != "low_first" {
			add(key, i, field, "word_order is high_first or low_first, not %q", v)
		}
	}
	checkOrder("word_order", -1, "", spec.WordOrder)
	if spec.Profile != "" {
		if _, ok := profiles[spec.Profile]; !ok {
			add("profile", -1, "", "no profile %q (known: %s)", spec.Profile, strings.Join(Profiles(), ", "))
		}
		if len(spec.Registers) > 0 {
			add("registers", -1, "", "profile replaces registers: give one or the other")
		}
	} else if len(spec.Registers) == 0 && spec.Relay == nil {
		add("driver", -1, "", "a modbus device needs registers, a profile or a relay")
	}
	names := map[string]bool{}
	for i, r := range spec.Registers {
		if r.Name == "" {
			add("registers", i, "", "each register needs a name")
		} else if names[r.Name] {
			add("registers", i, "name", "register name %q is used twice", r.Name)
		}
		names[r.Name] = true
		table, ok := mbdrv.ParseTable(r.Table)
		if !ok {
			add("registers", i, "table", "table is holding, input, coil or discrete, not %q", r.Table)
		}
		typ, ok := mbdrv.ParseType(r.Type)
		if !ok {
			add("registers", i, "type", "type is uint16, int16, uint32, int32, float32, float64 or string, not %q", r.Type)
			continue
		}
		if table.Bits() && r.Type != "" {
			add("registers", i, "type", "a %s is one bit: it takes no type", table)
		}
		switch {
		case typ == mbdrv.String && (r.Count < 1 || r.Count > mbdrv.MaxRegisters):
			add("registers", i, "count", "a string needs count: its length in registers, 1 to %d", mbdrv.MaxRegisters)
		case typ != mbdrv.String && r.Count != 0:
			add("registers", i, "count", "count applies to strings only")
		}
		n := typ.Registers(r.Count)
		if table.Bits() {
			n = 1
		}
		if r.Address < 0 || r.Address+n-1 > 0xFFFF {
			add("registers", i, "address", "address %d is outside 0 to 65535 (the 0-based protocol address, not 40001-style)", r.Address)
		}
		checkOrder("registers", i, "word_order", r.WordOrder)
	}
	if r := spec.Relay; r != nil {
		switch r.Table {
		case "", "coil", "holding":
		default:
			add("relay", -1, "", "relay table is coil or holding, not %q", r.Table)
		}
		if r.Address < 0 || r.Address > 0xFFFF {
			add("relay", -1, "", "relay address %d is outside 0 to 65535", r.Address)
		}
		for _, v := range []*int{r.On, r.Off} {
			if v != nil && (*v < 0 || *v > 0xFFFF) {
				add("relay", -1, "", "relay on and off are register values, 0 to 65535")
			}
		}
	}
	switch spec.SafeState {
	case "", "off", "on":
	default:
		add("safe_state", -1, "", "safe_state is on or off, not %q", spec.SafeState)
	}
	if spec.SafeState != "" && spec.Relay == nil {
		add("safe_state", -1, "", "safe_state needs a relay entry")
	}
	if p, ok := profiles[spec.Profile]; ok && p.class == sensors.ClassUPS && spec.Relay != nil {
		add("relay", -1, "", "a device with a UPS profile is a UPS, not a relay: give the relay its own device (same bus and unit_id)")
	}
	return errors.Join(errs...)
}

// Profiles lists the built-in profile names, sorted.
func Profiles() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
