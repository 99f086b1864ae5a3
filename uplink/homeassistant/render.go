package homeassistant

import (
	"encoding/json"
	"fmt"
)

// haDevice is the `device` block of a discovery config.
type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Model        string   `json:"model,omitempty"`
	Manufacturer string   `json:"manufacturer,omitempty"`
	SWVersion    string   `json:"sw_version,omitempty"`
	ViaDevice    string   `json:"via_device,omitempty"`
}

type origin struct {
	Name      string `json:"name"`
	SWVersion string `json:"sw_version,omitempty"`
}

// config is one discovery config; the fields are HA's (unabbreviated).
type config struct {
	Name              string   `json:"name"`
	UniqueID          string   `json:"unique_id"`
	StateTopic        string   `json:"state_topic"`
	ValueTemplate     string   `json:"value_template"`
	DeviceClass       string   `json:"device_class,omitempty"`
	StateClass        string   `json:"state_class,omitempty"`
	Unit              string   `json:"unit_of_measurement,omitempty"`
	EntityCategory    string   `json:"entity_category,omitempty"`
	PayloadOn         string   `json:"payload_on,omitempty"`
	PayloadOff        string   `json:"payload_off,omitempty"`
	CommandTopic      string   `json:"command_topic,omitempty"`
	CommandTemplate   string   `json:"command_template,omitempty"`
	QoS               int      `json:"qos,omitempty"`
	AvailabilityTopic string   `json:"availability_topic,omitempty"`
	AvailabilityTmpl  string   `json:"availability_template,omitempty"`
	PayloadAvailable  string   `json:"payload_available,omitempty"`
	PayloadNotAvail   string   `json:"payload_not_available,omitempty"`
	Device            haDevice `json:"device"`
	Origin            origin   `json:"origin"`
}

// stateTemplate is the value template for R/state: its payload is JSON.
const stateTemplate = "{{ value_json.state }}"

// render fills p.configs from p.site and p.ents. Called with p.mu held.
func (p *Publisher) render() {
	s := p.site
	root := s.Root
	appID := "rackwatch:" + s.Site + "/" + s.Node
	org := origin{Name: "rackwatch", SWVersion: s.Version}
	app := haDevice{Identifiers: []string{appID}, Name: "rackwatch " + s.Site + "/" + s.Node,
		Model: "rackwatch", Manufacturer: "rackwatch", SWVersion: s.Version}
	p.put(p.applianceTopic(), config{Name: "Uplink", UniqueID: appID + "/uplink", StateTopic: root + "/state",
		ValueTemplate: stateTemplate, DeviceClass: "connectivity", EntityCategory: "diagnostic",
		PayloadOn: "online", PayloadOff: "offline", Device: app, Origin: org})

	for _, e := range p.ents {
		d := p.devs[e.Device]
		dq, err1 := jinjaString(e.Device)
		mq, err2 := jinjaString(e.Metric)
		if err1 != nil || err2 != nil {
			continue
		}
		dev := haDevice{Identifiers: []string{appID + "/" + d.ID}, Name: d.ID, Model: d.Model, ViaDevice: appID}
		if id := p.ident[d.ID]; id != [2]string{} {
			dev.Manufacturer = id[0]
			if id[1] != "" {
				dev.Model = id[1] + " (" + d.Model + ")"
			}
		}
		if d.Description != "" {
			dev.Name = d.ID + " (" + d.Description + ")"
		}
		c := config{Name: e.Metric, UniqueID: appID + "/" + d.ID + "/" + e.Metric, StateTopic: root + "/telemetry",
			AvailabilityTopic: root + "/state", AvailabilityTmpl: stateTemplate,
			PayloadAvailable: "online", PayloadNotAvail: "offline", Device: dev, Origin: org}
		// One telemetry message carries every reading: pick this one out. A reading that is
		// not good shows as unknown ("None") rather than as its last value.
		loop := "{% for r in value_json.readings if r.device == " + dq + " and r.metric == " + mq + " %}"
		component := "sensor"
		switch {
		case d.Class == "relay" && e.Metric == "relay":
			component = "switch"
			c.ValueTemplate = loop + "{% if r.quality != 'good' %}None{% elif r.value == 1 %}on{% else %}off{% endif %}{% endfor %}"
			c.PayloadOn, c.PayloadOff = "on", "off"
			c.CommandTopic, c.QoS = root+"/cmd", 1
			// Each command needs an id of its own: rackwatch answers a repeated id without
			// running it again.
			c.CommandTemplate = fmt.Sprintf(`{"id":"ha-%s-{{ range(100000) | random }}{{ range(100000) | random }}","action":"relay","device":%s,"state":"{{ value }}"}`,
				d.ID, jsonString(d.ID))
		case e.Metric == "contact":
			component = "binary_sensor"
			c.ValueTemplate = loop + "{% if r.quality != 'good' %}None{% elif r.value == 1 %}ON{% else %}OFF{% endif %}{% endfor %}"
		case e.Text:
			c.ValueTemplate = loop + "{{ r.value if r.quality == 'good' else 'None' }}{% endfor %}"
		default:
			k := kindOf(e.Metric, e.Unit)
			c.DeviceClass, c.StateClass, c.Unit = k.DeviceClass, k.StateClass, k.Unit
			c.ValueTemplate = loop + "{{ r.value if r.quality == 'good' and r.value is number else 'None' }}{% endfor %}"
		}
		p.put(p.site.Prefix+"/"+component+"/"+p.nodeID()+"/"+topicID(e.Device, e.Metric)+"/config", c)
	}
}

func (p *Publisher) put(topic string, c config) {
	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	p.configs[topic] = b
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
