package site

import (
	"reflect"
	"sync"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/sensors"
)

// Pool keeps devices open across config reloads: a device whose spec did not change is
// handed to the new site as it is, so a relay keeps its output and a serial port is not
// reopened. Devices not in the new config are closed.
type Pool struct {
	env  sensors.Env
	mu   sync.Mutex
	devs map[string]pooled
}

type pooled struct {
	spec sensors.Spec
	dev  sensors.Device
}

// NewPool makes an empty pool.
func NewPool(env sensors.Env) *Pool { return &Pool{env: env, devs: map[string]pooled{}} }

// Get returns the open device for spec, or makes it.
func (p *Pool) Get(spec sensors.Spec) (sensors.Device, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.devs[spec.ID]; ok {
		if reflect.DeepEqual(d.spec, spec) {
			return d.dev, nil
		}
		d.dev.Close()
		delete(p.devs, spec.ID)
	}
	dev, err := sensors.New(spec, p.env)
	if err != nil {
		return nil, err
	}
	p.devs[spec.ID] = pooled{spec, dev}
	return dev, nil
}

// staged is the devices of a site being built while the running site keeps its own: the
// unchanged ones are shared, new and changed ones are opened beside the running ones and join
// the pool only when the new site takes over (commit), or are closed (abort).
type staged struct {
	p     *Pool
	fresh map[string]pooled
	// later are changed devices that cannot be made while the running site holds the old
	// instance (a GPIO line is requested once; a relay is driven to its safe state when made):
	// they are made at commit, after the old instance is closed.
	later map[string]sensors.Spec
}

// stage gets the devices for specs without touching the devices in use. A device that cannot
// be made fails the stage (strict: a reload), or is returned in failed (the first start, which
// runs the rest of the rack and shows the device as an error), unless an older instance of it
// holds what it needs.
func (p *Pool) stage(specs []sensors.Spec, strict bool) (st *staged, devs map[string]sensors.Device, failed map[string]error, err error) {
	st = &staged{p: p, fresh: map[string]pooled{}, later: map[string]sensors.Spec{}}
	devs, failed = map[string]sensors.Device{}, map[string]error{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, spec := range specs {
		old, inUse := p.devs[spec.ID]
		if inUse && reflect.DeepEqual(old.spec, spec) {
			devs[spec.ID] = old.dev
			continue
		}
		if inUse && config.IsRelay(spec) {
			// Making a relay drives its line to the safe state: not while the running site
			// holds the line.
			st.later[spec.ID] = spec
			continue
		}
		dev, err := sensors.New(spec, p.env)
		if err != nil {
			switch {
			case inUse:
				st.later[spec.ID] = spec
			case strict:
				st.abortLocked()
				return nil, nil, nil, &deviceError{id: spec.ID, err: err}
			default:
				failed[spec.ID] = err
			}
			continue
		}
		st.fresh[spec.ID] = pooled{spec, dev}
		devs[spec.ID] = dev
	}
	return st, devs, failed, nil
}

type deviceError struct {
	id  string
	err error
}

func (e *deviceError) Error() string { return "device " + e.id + ": " + e.err.Error() }
func (e *deviceError) Unwrap() error { return e.err }

// abort closes what the stage opened.
func (st *staged) abort() {
	st.p.mu.Lock()
	defer st.p.mu.Unlock()
	st.abortLocked()
}

func (st *staged) abortLocked() {
	for _, d := range st.fresh {
		d.dev.Close()
	}
	st.fresh = nil
}

// commit makes the staged devices the pool's: replaced and dropped devices are closed, the
// devices opened late are made now: late has those made, failed those that could not be.
func (st *staged) commit(keep []sensors.Spec) (late map[string]sensors.Device, failed map[string]error) {
	p := st.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, d := range st.fresh {
		if old, ok := p.devs[id]; ok {
			old.dev.Close()
		}
		p.devs[id] = d
	}
	late, failed = map[string]sensors.Device{}, map[string]error{}
	for id, spec := range st.later {
		if old, ok := p.devs[id]; ok {
			old.dev.Close()
			delete(p.devs, id)
		}
		dev, err := sensors.New(spec, p.env)
		if err != nil {
			failed[id] = err
			continue
		}
		p.devs[id] = pooled{spec, dev}
		late[id] = dev
	}
	p.retainLocked(keep)
	return late, failed
}

// Retain closes the devices whose ids are not in keep.
func (p *Pool) Retain(keep []sensors.Spec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retainLocked(keep)
}

func (p *Pool) retainLocked(keep []sensors.Spec) {
	ids := map[string]bool{}
	for _, s := range keep {
		ids[s.ID] = true
	}
	for id, d := range p.devs {
		if !ids[id] {
			d.dev.Close()
			delete(p.devs, id)
		}
	}
}

// CloseAll closes every device: relays fall to their safe state.
func (p *Pool) CloseAll() {
	p.Retain(nil)
}
