// Package gpio opens GPIO lines by name through periph.io's host drivers (on Linux the GPIO
// character device, /dev/gpiochipN) and holds what the contact and relay devices share: the
// mapping between a logical state (active, energised) and a line level.
//
// It knows lines and levels only: it must not import sensors/, daemon/ or uplink/.
package gpio

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// Open returns the line called name: a name the kernel gives it ("GPIO17" on a Raspberry Pi),
// or its number. It fails when there is no such line on this board.
func Open(name string) (pgpio.PinIO, error) {
	if name == "" {
		return nil, errors.New("gpio: no pin named")
	}
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("gpio: init periph host drivers: %w", err)
	}
	if p := gpioreg.ByName(name); p != nil {
		return p, nil
	}
	var known []string
	for _, p := range gpioreg.All() {
		known = append(known, p.Name())
	}
	sort.Strings(known)
	if len(known) == 0 {
		return nil, fmt.Errorf("gpio: no line %q: this machine has no GPIO lines (no /dev/gpiochip*, or no permission)", name)
	}
	if len(known) > 12 {
		known = append(known[:12], "…")
	}
	return nil, fmt.Errorf("gpio: no line %q (known: %s)", name, strings.Join(known, ", "))
}

// Polarity maps a logical state (a contact active, a relay energised) to a line level.
type Polarity struct {
	ActiveLow bool
}

// ParsePolarity reads the `active` key: "high" (the default when empty) or "low".
func ParsePolarity(s string) (Polarity, error) {
	switch s {
	case "", "high":
		return Polarity{}, nil
	case "low":
		return Polarity{ActiveLow: true}, nil
	}
	return Polarity{}, fmt.Errorf("gpio: active is high or low, not %q", s)
}

// Level is the line level for a logical state.
func (p Polarity) Level(on bool) pgpio.Level { return pgpio.Level(on != p.ActiveLow) }

// On is the logical state of a line level.
func (p Polarity) On(l pgpio.Level) bool { return bool(l) != p.ActiveLow }

// Pull is the bias that holds an open (disconnected) input inactive: up for active-low, down
// for active-high. A contact whose wire is cut then reads inactive, not random.
func (p Polarity) Pull() pgpio.Pull {
	if p.ActiveLow {
		return pgpio.PullUp
	}
	return pgpio.PullDown
}

func (p Polarity) String() string {
	if p.ActiveLow {
		return "low"
	}
	return "high"
}
