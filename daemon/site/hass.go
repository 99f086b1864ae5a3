package site

import (
	"encoding/json"
	"fmt"
	"hash/fnv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/uplink"
	"github.com/rackwatch/rackwatch/uplink/homeassistant"
)

// setHass tells the Home Assistant discovery publisher what this site runs. With
// mqtt.homeassistant off it clears what an earlier config published.
func (s *Site) setHass() {
	p := s.sh.hass
	if p == nil {
		return
	}
	cfg := s.cfg
	hs := homeassistant.Site{Enabled: cfg.MQTT.Homeassistant && s.upOpts != nil, Prefix: cfg.MQTT.HomeassistantPrefix,
		Root: cfg.MQTT.Prefix + "/" + cfg.Site + "/" + cfg.Node, Site: cfg.Site, Node: cfg.Node, Version: s.opt.Version}
	for _, spec := range cfg.Devices {
		hs.Devices = append(hs.Devices, homeassistant.Device{ID: spec.ID, Model: spec.Driver, Class: string(sensors.SpecClass(spec)),
			Description: spec.Description, Fingerprint: specPrint(spec)})
	}
	if err := p.Set(hs); err != nil {
		s.log.Error("home assistant discovery", "err", err)
	}
}

// observeHass lets the discovery publisher learn the readings of a telemetry message.
func (s *Site) observeHass(rs []uplink.Reading) {
	if p := s.sh.hass; p != nil {
		p.Observe(rs)
	}
}

// specPrint changes when a device's config does.
func specPrint(spec sensors.Spec) string {
	b, err := json.Marshal(struct {
		Driver  string
		Options any
	}{spec.Driver, spec.Options})
	if err != nil {
		b = fmt.Appendf(nil, "%s %#v", spec.Driver, spec.Options)
	}
	h := fnv.New64a()
	h.Write(b)
	return fmt.Sprintf("%016x", h.Sum64())
}

// hassMetrics are the discovery publisher's counts on /metrics.
func (sh *shared) hassMetrics() []prometheus.Collector {
	p := sh.hass
	if p == nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackwatch_homeassistant_entities",
			Help: "Home Assistant discovery configs published (mqtt.homeassistant)."},
			func() float64 { return float64(p.Stats().Entities) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rackwatch_homeassistant_dropped_total",
			Help: "Readings that got no Home Assistant entity because the site has more than the limit."},
			func() float64 { return float64(p.Stats().Dropped) }),
	}
}
