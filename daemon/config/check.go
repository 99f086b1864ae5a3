package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/rackwatch/rackwatch/daemon/notify"
	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/sensors"
	snmpdev "github.com/rackwatch/rackwatch/sensors/snmp"
	"github.com/rackwatch/rackwatch/uplink"
	"github.com/rackwatch/rackwatch/uplink/homeassistant"
	"github.com/rackwatch/rackwatch/uplink/sparkplug"
)

var nameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)

// IsUPS reports whether a device reads a UPS; its driver says.
func IsUPS(d sensors.Spec) bool { return sensors.SpecClass(d) == sensors.ClassUPS }

// IsRelay reports whether a device drives a relay; its driver says.
func IsRelay(d sensors.Spec) bool { return sensors.SpecClass(d) == sensors.ClassRelay }

type checker struct {
	file     string
	root     *yaml.Node
	problems Problems
}

func (c *checker) addf(n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	c.problems = append(c.problems, Problem{File: c.file, Line: line, Msg: cutMsg(fmt.Sprintf(format, cutArgs(args)...))})
}

// at walks a path of mapping keys (string) and sequence indexes (int) and returns the node
// there, or the deepest node found on the way, so a problem always gets the nearest line.
func (c *checker) at(path ...any) *yaml.Node {
	n := c.root
	for _, p := range path {
		if n == nil {
			return nil
		}
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
			}
		}
		if next == nil {
			return n
		}
		n = next
	}
	return n
}

// key returns the key node of a mapping entry (its line is where the key is written).
func keyNode(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return m
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return m
}

func (c *checker) check(cfg *Config) {
	if c.root == nil || c.root.Kind != yaml.MappingNode {
		c.addf(c.root, "the config must be a YAML mapping with at least site, node and devices")
		return
	}
	for _, k := range []string{"site", "node"} {
		v := cfg.Site
		if k == "node" {
			v = cfg.Node
		}
		switch {
		case v == "":
			c.addf(c.root, "%s is required", k)
		case !nameRE.MatchString(v):
			c.addf(c.at(k), "%s %q: use lower-case letters, digits, - and _ only", k, v)
		}
	}
	if len(cfg.Devices) == 0 {
		c.addf(c.at("devices"), "devices is required: list at least one device")
	}
	c.checkListen("tcp", cfg.Web.Listen, "web", "listen")
	c.checkPair("web", cfg.Web.TLSCert, cfg.Web.TLSKey, "tls_cert", "tls_key")
	if cfg.NUT.Listen != "" {
		c.checkListen("tcp", cfg.NUT.Listen, "nut", "listen")
	}
	c.checkPair("nut", cfg.NUT.TLSCert, cfg.NUT.TLSKey, "tls_cert", "tls_key")
	users := make([]nut.User, len(cfg.NUT.Users))
	c.checkLimits(cfg)
	for i, u := range cfg.NUT.Users {
		users[i] = nut.User{Name: u.Name, PasswordFile: u.PasswordFile, Password: u.Password, Upsmon: u.Upsmon, Instcmds: u.Instcmds}
	}
	for i := range users {
		if err := nut.CheckUser(users, i); err != nil {
			c.addf(c.at("nut", "users", i), "%v", err)
		}
	}
	if cfg.Traps.Listen != "" {
		c.checkListen("udp", cfg.Traps.Listen, "traps", "listen")
	}
	for i, src := range cfg.Traps.Sources {
		if _, err := ParseSource(src); err != nil {
			c.addf(c.at("traps", "sources", i), "traps source %q: write an address or a CIDR prefix (192.0.2.0/24)", cut(src))
		}
	}
	if cfg.Traps.Rate < 0 || cfg.Traps.Burst < 0 || cfg.Traps.MaxOpen < 0 {
		c.addf(c.at("traps"), "traps: rate, burst and max_open cannot be negative")
	}
	if cfg.Incidents.StormLimit < 0 {
		c.addf(c.at("incidents", "storm_limit"), "incidents: storm_limit cannot be negative")
	}
	if cfg.Audit.Retention < 0 {
		c.addf(c.at("audit", "retention"), "audit: retention cannot be negative")
	}
	if cfg.Update.CommitAfter < 0 {
		c.addf(c.at("update", "commit_after"), "update: commit_after cannot be negative")
	}
	if cfg.Update.MaxBytes < 0 || (cfg.Update.MaxBytes > 0 && cfg.Update.MaxBytes < 1<<20) {
		c.addf(c.at("update", "max_bytes"), "update: max_bytes is at least 1 MiB (a slot image does not fit in less)")
	}
	for i, u := range cfg.Traps.Users {
		if err := snmpdev.CheckTrapUser(u); err != nil {
			c.addf(c.at("traps", "users", i), "traps: %v", err)
		}
	}
	if cfg.MQTT.EmbeddedBroker != "" {
		c.checkListen("tcp", cfg.MQTT.EmbeddedBroker, "mqtt", "embedded_broker")
	}
	for i, b := range cfg.MQTT.Brokers {
		if err := uplink.CheckBroker(b); err != nil {
			where := c.at("mqtt", "brokers", i)
			if keyNode(c.at("mqtt"), "brokers") == c.at("mqtt") {
				// The broker is the one the embedded_broker default made.
				where = c.at("mqtt", "embedded_broker")
			}
			c.addf(where, "mqtt: %v", err)
		}
	}
	c.checkPair("mqtt.tls", cfg.MQTT.TLS.CertFile, cfg.MQTT.TLS.KeyFile, "cert_file", "key_file")
	if err := uplink.CheckTopicLevel(cfg.MQTT.Prefix); err != nil {
		c.addf(c.at("mqtt", "prefix"), "mqtt prefix: %v", err)
	}
	if err := homeassistant.CheckPrefix(cfg.MQTT.HomeassistantPrefix); err != nil {
		c.addf(c.at("mqtt", "homeassistant_prefix"), "mqtt homeassistant_prefix: %v", err)
	}
	if cfg.MQTT.Homeassistant && cfg.MQTT.Format == uplink.FormatSparkplug {
		c.addf(c.at("mqtt", "homeassistant"), "mqtt homeassistant: Home Assistant's entities read R/telemetry, which format %s does not publish", uplink.FormatSparkplug)
	}
	if q := cfg.MQTT.TelemetryQoS; q != nil {
		if err := uplink.CheckTelemetryQoS(*q); err != nil {
			c.addf(c.at("mqtt", "telemetry_qos"), "mqtt telemetry_qos: %v", err)
		}
	}
	if cfg.MQTT.TelemetryInterval < MinTelemetryInterval {
		c.addf(c.at("mqtt", "telemetry_interval"), "mqtt telemetry_interval %v is below the floor of %v", cfg.MQTT.TelemetryInterval, MinTelemetryInterval)
	}
	if f := cfg.MQTT.QueueFlush; f != nil && *f < 0 {
		c.addf(c.at("mqtt", "queue_flush"), "mqtt queue_flush must be 0 (commit every telemetry message) or positive")
	}
	c.checkSparkplug(cfg)
	c.checkNotify(cfg.Notify)

	ids := map[string]sensors.Spec{}
	for i, d := range cfg.Devices {
		n := c.at("devices", i)
		c.checkDevice(n, d)
		if d.ID != "" {
			if _, dup := ids[d.ID]; dup {
				c.addf(keyNode(n, "id"), "device id %q is used twice", d.ID)
			} else {
				ids[d.ID] = d
			}
		}
	}
	for i, r := range cfg.Rules {
		c.checkRule(c.at("rules", i), r, ids)
	}
	if p := cfg.Failover.Power; p != nil {
		n := c.at("failover", "power")
		if len(p.UPS) == 0 {
			c.addf(n, "failover.power: ups is required (the UPS devices it watches)")
		}
		for j, id := range p.UPS {
			d, ok := ids[id]
			switch {
			case !ok:
				c.addf(c.at("failover", "power", "ups", j), "failover.power: no device %q", id)
			case !IsUPS(d):
				c.addf(c.at("failover", "power", "ups", j), "failover.power: %q is a %s, not a UPS", id, d.Driver)
			}
		}
		if p.GeneratorRelay != "" {
			c.checkRelay(c.at("failover", "power", "generator_relay"), "failover.power", p.GeneratorRelay, ids)
		}
		if p.GeneratorDevice != "" {
			if _, ok := ids[p.GeneratorDevice]; !ok {
				c.addf(c.at("failover", "power", "generator_device"), "failover.power: no device %q", p.GeneratorDevice)
			}
			if p.GeneratorRelay == "" {
				c.addf(c.at("failover", "power", "generator_device"), "failover.power: generator_device needs generator_relay (the start it confirms)")
			}
		}
		if p.ShutdownRuntimeBelow < 0 || p.GeneratorTimeout < 0 || p.GeneratorStartWithin < 0 {
			c.addf(n, "failover.power: durations must be positive")
		}
	}
	if cl := cfg.Failover.Cooling; cl != nil {
		n := c.at("failover", "cooling")
		if len(cl.Sensors) == 0 {
			c.addf(n, "failover.cooling: sensors is required")
		}
		for j, id := range cl.Sensors {
			if _, ok := ids[id]; !ok {
				c.addf(c.at("failover", "cooling", "sensors", j), "failover.cooling: no device %q", id)
			}
		}
		if cl.BackupRelay == "" {
			c.addf(n, "failover.cooling: backup_relay is required")
		} else {
			c.checkRelay(c.at("failover", "cooling", "backup_relay"), "failover.cooling", cl.BackupRelay, ids)
		}
		if cl.OnAbove != nil && cl.OffBelow != nil && *cl.OffBelow >= *cl.OnAbove {
			c.addf(c.at("failover", "cooling", "off_below"), "failover.cooling: off_below (%g) must be below on_above (%g)", *cl.OffBelow, *cl.OnAbove)
		}
	}
}

// checkNotify asks the notify package about each target and route.
func (c *checker) checkNotify(n notify.Config) {
	if err := notify.CheckEnterprise(n.Enterprise); err != nil {
		c.addf(c.at("notify", "enterprise"), "notify: %v", err)
	}
	names := map[string]bool{}
	for i, t := range n.Targets {
		for _, err := range unjoin(notify.CheckTarget(t)) {
			c.addf(c.at("notify", "targets", i), "notify target %s: %v", t.Name, err)
		}
		if names[t.Name] {
			c.addf(c.at("notify", "targets", i, "name"), "notify target name %q is used twice", t.Name)
		}
		names[t.Name] = true
	}
	for i, r := range n.Routes {
		for _, err := range unjoin(notify.CheckRoute(r, names)) {
			c.addf(c.at("notify", "routes", i), "notify route %d: %v", i+1, err)
		}
	}
}

// checkPair refuses a certificate without its key or a key without its certificate, at the
// line of the one given.
func (c *checker) checkPair(section, cert, key, certKey, keyKey string) {
	if (cert == "") == (key == "") {
		return
	}
	var path []any
	for _, p := range strings.Split(section, ".") {
		path = append(path, p)
	}
	given := certKey
	if cert == "" {
		given = keyKey
	}
	c.addf(keyNode(c.at(path...), given), "%s: %s and %s go together", section, certKey, keyKey)
}

func (c *checker) checkRelay(n *yaml.Node, where, id string, ids map[string]sensors.Spec) {
	d, ok := ids[id]
	switch {
	case !ok:
		c.addf(n, "%s: no device %q", where, id)
	case !IsRelay(d):
		c.addf(n, "%s: %q is a %s, not a relay", where, id, d.Driver)
	}
}

func (c *checker) checkDevice(n *yaml.Node, d sensors.Spec) {
	if d.ID == "" {
		c.addf(n, "device: id is required")
	} else if !nameRE.MatchString(d.ID) {
		c.addf(keyNode(n, "id"), "device id %q: use lower-case letters, digits, - and _ only", d.ID)
	}
	drv, ok := sensors.Lookup(d.Driver)
	if d.Driver == "" {
		c.addf(n, "device %q: driver is required (one of %s)", d.ID, names(sensors.Drivers()))
		return
	}
	if !ok {
		c.addf(keyNode(n, "driver"), "device %q: unknown driver %q (known: %s)", d.ID, d.Driver, names(sensors.Drivers()))
		return
	}
	// Keys the driver does not take were refused while decoding, at their line.
	present := map[string]bool{}
	if m := sensors.Unmerge(n); m != nil && m.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(m.Content); i += 2 {
			present[m.Content[i].Value] = true
		}
	}
	missing := false
	for _, k := range drv.Required {
		if !present[k] {
			c.addf(n, "device %q: the %s driver needs %q", d.ID, d.Driver, k)
			missing = true
		}
	}
	if d.Timeout < 0 {
		c.addf(keyNode(n, "timeout"), "device %q: timeout must be positive", d.ID)
	}
	var specErr error
	if !missing { // else the driver's own check would say the same again
		specErr = sensors.CheckSpec(d)
	}
	for _, err := range unjoin(specErr) {
		where := n
		var ke *sensors.KeyError
		if errors.As(err, &ke) {
			where, err = keyIn(n, ke.Key, ke.In), ke.Err
		}
		c.addf(where, "device %q: %v", d.ID, err)
	}
}

// keyIn returns the node a KeyError points at in device n: the key's line, or the line of
// the list entry or nested key its In path leads to (the nearest one found).
func keyIn(n *yaml.Node, key string, in []any) *yaml.Node {
	m := sensors.Unmerge(n)
	at := keyNode(m, key)
	if len(in) == 0 || at == m {
		return at
	}
	c := checker{root: m}
	v := c.at(append([]any{key}, in...)...)
	if last, ok := in[len(in)-1].(string); ok {
		return keyNode(c.at(append([]any{key}, in[:len(in)-1]...)...), last)
	}
	return v
}

// unjoin lists the errors errors.Join put together (err itself otherwise).
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

func (c *checker) checkRule(n *yaml.Node, r Rule, ids map[string]sensors.Spec) {
	if r.Name == "" {
		c.addf(n, "rule: name is required")
	}
	if r.Device == "" || r.Metric == "" {
		c.addf(n, "rule %q: device and metric are required", r.Name)
	} else if d, ok := ids[r.Device]; !ok {
		c.addf(keyNode(n, "device"), "rule %q: no device %q", r.Name, r.Device)
	} else if drv, ok := sensors.Lookup(d.Driver); ok && len(drv.Metrics) > 0 {
		if _, ok := drv.Metrics[r.Metric]; !ok {
			c.addf(keyNode(n, "metric"), "rule %q: a %s device has no metric %q", r.Name, d.Driver, r.Metric)
		}
	}
	thresholds := r.WarnAbove != nil || r.CritAbove != nil || r.WarnBelow != nil || r.CritBelow != nil
	kinds := 0
	if thresholds {
		kinds++
	}
	if r.StatusHas != "" {
		kinds++
	}
	if r.Equals != nil {
		kinds++
	}
	if kinds != 1 {
		c.addf(n, "rule %q: give exactly one of thresholds (warn_above, crit_above, warn_below, crit_below), status_has or equals", r.Name)
	}
	if r.Severity != "" && !r.Severity.Valid() {
		c.addf(keyNode(n, "severity"), "rule %q: severity is warning or critical, not %q", r.Name, r.Severity)
	}
	if thresholds && kinds == 1 && r.Severity != "" {
		c.addf(keyNode(n, "severity"), "rule %q: a threshold rule takes its severity from warn_*/crit_*", r.Name)
	}
	if r.WarnAbove != nil && r.CritAbove != nil && *r.CritAbove < *r.WarnAbove {
		c.addf(keyNode(n, "crit_above"), "rule %q: crit_above (%g) is below warn_above (%g)", r.Name, *r.CritAbove, *r.WarnAbove)
	}
	if r.WarnBelow != nil && r.CritBelow != nil && *r.CritBelow > *r.WarnBelow {
		c.addf(keyNode(n, "crit_below"), "rule %q: crit_below (%g) is above warn_below (%g)", r.Name, *r.CritBelow, *r.WarnBelow)
	}
	if r.Hysteresis < 0 || r.For < 0 {
		c.addf(n, "rule %q: hysteresis and for must not be negative", r.Name)
	}
}

// ParseSource reads one traps.sources entry: an address (one host) or a CIDR prefix.
func ParseSource(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

// checkSparkplug checks mqtt.format and, for sparkplug_b, the ids that go into its topics.
func (c *checker) checkSparkplug(cfg *Config) {
	m := cfg.MQTT
	switch m.Format {
	case "", uplink.FormatJSON:
		return
	case uplink.FormatSparkplug:
	default:
		c.addf(c.at("mqtt", "format"), "mqtt format %q not supported (%s or %s)", m.Format, uplink.FormatJSON, uplink.FormatSparkplug)
		return
	}
	if err := sparkplug.CheckID(m.Sparkplug.Group); err != nil {
		c.addf(c.at("mqtt", "sparkplug", "group"), "mqtt sparkplug group: %v", err)
	}
	if h := m.Sparkplug.PrimaryHost; h != "" {
		if err := sparkplug.CheckID(h); err != nil {
			c.addf(c.at("mqtt", "sparkplug", "primary_host"), "mqtt sparkplug primary_host: %v", err)
		}
	}
}
