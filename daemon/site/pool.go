package site

import (
	"reflect"
	"sync"

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

// Retain closes the devices whose ids are not in keep.
func (p *Pool) Retain(keep []sensors.Spec) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
