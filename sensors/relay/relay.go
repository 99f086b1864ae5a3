// Package relay is the `relay` device (CONTRACT.md §2): a relay output on a GPIO line (a
// generator start contact, a backup cooling unit), giving the reading `relay` (1 = energised)
// and switched through sensors.Actuator.
//
// Keys: pin (required; the line's name, e.g. GPIO27), active (high: the relay is energised
// when the line is high, the default; low: when it is low, as on most opto-isolated relay
// boards), safe_state (off, the default, or on: what the relay does when nobody decides).
//
// safe_state is applied when the device is made (at start, and so also at the start after a
// crash) and at Close (a clean stop). Between a crash and the restart the line is what the
// kernel leaves it (usually its last level): wire each relay so that its safe state is the one
// a dead controller should leave. Operator overrides (on/off/auto), their persistence and who
// changed what are the daemon's business, not this package's.
//
// It must not import daemon/ or uplink/.
package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	rwgpio "github.com/rackwatch/rackwatch/drivers/gpio"
	"github.com/rackwatch/rackwatch/sensors"
)

// Name is the driver name in configs.
const Name = "relay"

func init() {
	sensors.Register(sensors.Driver{
		Name:     Name,
		Class:    sensors.ClassRelay,
		Options:  Options{},
		Required: []string{"pin"},
		Metrics:  map[string]string{"relay": ""},
		Check:    Check,
		New: func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) {
			return New(spec)
		},
	})
}

// Options are a relay device's keys; the simulated relay takes them too.
type Options struct {
	Pin       string `yaml:"pin"`        // the line's name, e.g. GPIO27
	Active    string `yaml:"active"`     // high (default) or low
	SafeState string `yaml:"safe_state"` // off (default) or on
}

// SafeOn implements sensors.SafeStater.
func (o Options) SafeOn() bool { return o.SafeState == "on" }

// Relay is one relay output. It implements sensors.Device and sensors.Actuator.
type Relay struct {
	id   string
	pin  gpio.PinIO
	pol  rwgpio.Polarity
	safe bool

	mu     sync.Mutex
	on     bool
	closed bool
}

// New opens the line the spec names and puts the relay in its safe state.
func New(spec sensors.Spec) (*Relay, error) {
	o := sensors.Opts[Options](spec)
	if _, _, err := parse(o); err != nil {
		return nil, err
	}
	pin, err := rwgpio.Open(o.Pin)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return NewWithPin(spec, pin)
}

// NewWithPin drives pin (a gpiotest.Pin in tests) and puts the relay in its safe state.
func NewWithPin(spec sensors.Spec, pin gpio.PinIO) (*Relay, error) {
	pol, safe, err := parse(sensors.Opts[Options](spec))
	if err != nil {
		return nil, err
	}
	r := &Relay{id: spec.ID, pin: pin, pol: pol, safe: safe}
	if err := r.drive(safe); err != nil {
		return nil, fmt.Errorf("relay %s: apply safe state: %w", spec.ID, err)
	}
	return r, nil
}

// Check reports why spec cannot drive a relay (active, safe_state).
func Check(spec sensors.Spec) error { return CheckOptions(sensors.Opts[Options](spec)) }

// CheckOptions is Check on the keys themselves; the simulated relay shares it.
func CheckOptions(o Options) error {
	_, _, err := parse(o)
	return err
}

func parse(o Options) (rwgpio.Polarity, bool, error) {
	pol, err := rwgpio.ParsePolarity(o.Active)
	if err != nil {
		return pol, false, &sensors.KeyError{Key: "active", Err: fmt.Errorf("relay: %w", err)}
	}
	switch o.SafeState {
	case "", "off":
		return pol, false, nil
	case "on":
		return pol, true, nil
	}
	return pol, false, &sensors.KeyError{Key: "safe_state", Err: fmt.Errorf("relay: safe_state is on or off, not %q", o.SafeState)}
}

// drive sets the output. Called with mu held, or before r is shared.
func (r *Relay) drive(on bool) error {
	if err := r.pin.Out(r.pol.Level(on)); err != nil {
		return err
	}
	r.on = on
	return nil
}

// Set implements sensors.Actuator: energise (true) or release (false).
func (r *Relay) Set(ctx context.Context, on bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("relay %s: closed", r.id)
	}
	if err := r.drive(on); err != nil {
		return fmt.Errorf("relay %s: switch %s: %w", r.id, onOff(on), err)
	}
	return nil
}

// On reports whether the relay is energised.
func (r *Relay) On() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.on
}

// SafeState is the state the relay takes at start and at Close.
func (r *Relay) SafeState() bool { return r.safe }

// Poll implements sensors.Device. It reports the state we drive, not a read-back of the line:
// periph's Read on a Linux output line reconfigures it as an input, which would drop the relay.
func (r *Relay) Poll(ctx context.Context) ([]sensors.Reading, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.closed {
		return []sensors.Reading{sensors.Failed(r.id, "relay", "", now)}, errors.New("relay " + r.id + ": closed")
	}
	return []sensors.Reading{sensors.Num(r.id, "relay", b2f(r.on), "", now)}, nil
}

// Close implements sensors.Device: the relay returns to its safe state.
func (r *Relay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if err := r.drive(r.safe); err != nil {
		return fmt.Errorf("relay %s: apply safe state at stop: %w", r.id, err)
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
