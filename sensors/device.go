package sensors

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"
)

// Device is one configured device. The daemon's poller calls Poll every Spec.Poll with a
// deadline; Poll returns every metric it knows, with Quality Error for those it could not read
// this time, and a non-nil error when the device as a whole did not answer.
type Device interface {
	Poll(ctx context.Context) ([]Reading, error)
	Close() error
}

// Watcher is a device that also reports on its own (a GPIO edge, a trap): Watch runs until ctx
// ends and calls emit for each change. The poller still calls Poll as a periodic re-read, so a
// missed event is caught.
type Watcher interface {
	Watch(ctx context.Context, emit func([]Reading)) error
}

// Actuator is a device that can be switched (a relay).
type Actuator interface {
	// Set energises (true) or releases (false) the output.
	Set(ctx context.Context, on bool) error
}

// Commander is a device that accepts NUT instant commands (INSTCMD).
type Commander interface {
	Commands() []string
	Command(ctx context.Context, cmd, arg string) error
}

// Env is what a factory gets besides its Spec.
type Env struct {
	// DataDir is where a device may keep state of its own (a relay's last override).
	DataDir string
}

// Factory makes a device from its spec. It should fail only for a spec that cannot work at
// all (no such port); a device that is merely unreachable now is made and fails its polls.
type Factory func(spec Spec, env Env) (Device, error)

// Driver is everything the daemon knows of a driver: the config checker, the NUT server, the
// policies and the page ask the registry, never a list of names.
type Driver struct {
	Name string
	// Class says what the device is to the rest of the daemon (a UPS for NUT and the power
	// policy, a relay for the policies' outputs, a section of the page).
	Class Class
	// DeviceClass, for a driver whose devices differ (a protocol that reads UPSes, meters
	// and generators alike), gives the class of one device from its spec; "" or a nil
	// DeviceClass means Class.
	DeviceClass func(Spec) Class
	// Options is the driver's option struct, as a zero value (Options{}): each device's keys
	// besides id, driver, poll, timeout and description are decoded into a new value of that
	// type, which the driver reads back with Opts. A key the struct has no field for is refused
	// at its line. Nil: the driver takes no keys of its own.
	Options any
	// Required are the option keys (YAML names) a device of this driver must set.
	Required []string
	// Metrics lists the metric names the driver produces, with units, for documentation and
	// for checking that a rule names a metric the device can have. Empty means "any".
	Metrics map[string]string
	New     Factory
	// Check reports why a spec cannot work with this driver, without touching the hardware
	// or reading files (the config is checked where neither may be); nil checks nothing
	// beyond the keys. A problem with one key is best returned as a *KeyError.
	Check func(Spec) error
	// MinPoll lowers the poll floor below MinPoll, for drivers that read no hardware.
	MinPoll time.Duration
}

// Class is what kind of device a driver reads or drives.
type Class string

const (
	// ClassUPS devices report NUT variables (ups.status, battery.*): the NUT server serves
	// them and failover.power may watch them.
	ClassUPS Class = "ups"
	// ClassRelay devices are Actuators: the policies' generator and backup relays.
	ClassRelay Class = "relay"
	// ClassContact devices report a dry contact (door, leak, smoke).
	ClassContact Class = "contact"
	// ClassEnvironmental devices report temperature, humidity, pressure.
	ClassEnvironmental Class = "environmental"
	// ClassPower devices meter a feed: voltage, current, power, energy.
	ClassPower Class = "power"
	// ClassGenerator devices report a generator controller's engine and output
	// (engine.running, generator.voltage.*): failover.power.generator_device.
	ClassGenerator Class = "generator"
	// ClassOther devices report whatever they are configured to read (generic SNMP).
	ClassOther Class = "other"
)

// ClassOf returns the class the named driver registered, "" when there is no such driver;
// where a device is at hand, SpecClass is the one to ask (it sees DeviceClass).
func ClassOf(driver string) Class {
	d, _ := Lookup(driver)
	return d.Class
}

// SpecClass returns the class of the device spec describes, "" for an unknown driver.
func SpecClass(spec Spec) Class {
	d, ok := Lookup(spec.Driver)
	if !ok {
		return ""
	}
	if d.DeviceClass != nil {
		if c := d.DeviceClass(spec); c != "" {
			return c
		}
	}
	return d.Class
}

// SafeStater is implemented by the options of a ClassRelay driver that has a safe state:
// the state the relay takes at start and when the daemon stops.
type SafeStater interface {
	SafeOn() bool
}

// SafeOn reports the safe state of a relay spec (off unless its options say on).
func SafeOn(spec Spec) bool {
	s, ok := spec.Options.(SafeStater)
	return ok && s.SafeOn()
}

// MinPoll is the shortest poll interval of a device: a shorter one keeps a core busy (and a
// bus or agent) for changes no rack sensor makes that fast.
const MinPoll = 100 * time.Millisecond

// KeyError is a spec problem that belongs to one key, so the config check can point at its
// line.
type KeyError struct {
	Key string
	// In leads from Key's value to the node the problem is about, for a key that holds a
	// list or a mapping: list indexes (int) and keys (string), e.g. 2, "type".
	In  []any
	Err error
}

func (e *KeyError) Error() string { return e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// CheckSpec reports why spec cannot work: an unknown driver, a poll below the driver's
// floor, or what the driver's own Check finds. The config check and the device factory both
// call it, so a spec is judged the same way by -check and at start.
func CheckSpec(spec Spec) error {
	d, ok := Lookup(spec.Driver)
	if !ok {
		return &KeyError{Key: "driver", Err: fmt.Errorf("unknown driver %q", spec.Driver)}
	}
	floor := MinPoll
	if d.MinPoll > 0 {
		floor = d.MinPoll
	}
	if spec.Poll != 0 && spec.Poll < floor {
		return &KeyError{Key: "poll", Err: fmt.Errorf("%v is below the %s driver's floor of %v", spec.Poll, spec.Driver, floor)}
	}
	if d.Check != nil {
		return d.Check(spec)
	}
	return nil
}

var (
	mu       sync.RWMutex
	registry = map[string]Driver{}
)

// Register adds a driver; packages call it from init. A second registration of a name panics:
// that is a programming error found by any test.
func Register(d Driver) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[d.Name]; dup {
		panic(fmt.Sprintf("sensors: driver %q registered twice", d.Name))
	}
	if d.Class == "" {
		panic(fmt.Sprintf("sensors: driver %q registers no Class", d.Name))
	}
	if d.Options != nil && reflect.TypeOf(d.Options).Kind() != reflect.Struct {
		panic(fmt.Sprintf("sensors: driver %q: Options must be a struct value, not %T", d.Name, d.Options))
	}
	registry[d.Name] = d
}

// Lookup returns the driver registered under name.
func Lookup(name string) (Driver, bool) {
	mu.RLock()
	defer mu.RUnlock()
	d, ok := registry[name]
	return d, ok
}

// Drivers lists the registered driver names, sorted.
func Drivers() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New makes a device from spec through the registry.
func New(spec Spec, env Env) (Device, error) {
	d, ok := Lookup(spec.Driver)
	if !ok {
		return nil, fmt.Errorf("%s: unknown driver %q", spec.ID, spec.Driver)
	}
	if d.New == nil {
		return nil, fmt.Errorf("%s: driver %q is not available in this build", spec.ID, spec.Driver)
	}
	if err := CheckSpec(spec); err != nil {
		return nil, fmt.Errorf("%s: %w", spec.ID, err)
	}
	dev, err := d.New(spec, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.ID, err)
	}
	return dev, nil
}
