// Package snmp is the generic `snmp` device: any agent (a PDU, a CRAC unit, an environmental
// probe) read by a configured list of OIDs, each turned into one reading
// {name, oid, unit, scale}: value = raw × scale (scale 0 means 1). An OID the agent does not
// have makes only that metric's reading an error; the device fails only when the agent does
// not answer at all.
//
// It also builds the drivers/snmp client configuration from a device spec (ClientConfig),
// which the upsmib device shares.
//
// It must not import daemon/ or uplink/.
package snmp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	snmpdrv "github.com/rackwatch/rackwatch/drivers/snmp"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
	"github.com/rackwatch/rackwatch/sensors"
)

func init() {
	sensors.Register(sensors.Driver{
		Name:     "snmp",
		Class:    sensors.ClassOther,
		Options:  Options{},
		Required: []string{"target", "metrics"},
		// Metric names come from the config: any.
		New: func(spec sensors.Spec, env sensors.Env) (sensors.Device, error) { return New(spec) },
		Check: func(spec sensors.Spec) error {
			o := sensors.Opts[Options](spec)
			_, err := metrics(o.Metrics)
			return errors.Join(CheckAgent(o.Agent), err)
		},
	})
}

// Agent are the keys that say how to reach an SNMP agent; the upsmib device takes them too.
type Agent struct {
	Target    string          `yaml:"target"` // host or host:port
	Community string          `yaml:"community"`
	Version   string          `yaml:"version"` // 1, 2c, 3
	V3        *sensors.SNMPv3 `yaml:"v3"`
}

// SNMPAgent returns a itself: options that embed an Agent, or that hold one under another
// name, say so by this method, so the trap receiver knows which device a sender is.
func (a Agent) SNMPAgent() Agent { return a }

// AgentOf returns the SNMP agent a device's options name, if they name one.
func AgentOf(spec sensors.Spec) (Agent, bool) {
	if a, ok := spec.Options.(interface{ SNMPAgent() Agent }); ok {
		return a.SNMPAgent(), true
	}
	return Agent{}, false
}

// Options are a generic snmp device's keys.
type Options struct {
	Agent   `yaml:",inline"`
	Metrics []Metric `yaml:"metrics"`
}

// Metric is one OID of a generic snmp device.
type Metric struct {
	Name  string  `yaml:"name"`
	OID   string  `yaml:"oid"`
	Unit  string  `yaml:"unit"`
	Scale float64 `yaml:"scale"`
}

// CheckAgent reports what in the agent keys (target, version, v3) cannot work, without
// reading the v3 password files. The upsmib device shares it.
func CheckAgent(spec Agent) error {
	var errs []error
	if err := snmpdrv.CheckTarget(spec.Target); err != nil {
		errs = append(errs, &sensors.KeyError{Key: "target", Err: err})
	}
	version := spec.Version
	if spec.V3 != nil && version == "" {
		version = "3"
	}
	var usm *snmpdrv.USM
	if spec.V3 != nil {
		u := unreadUSM(*spec.V3)
		u.EngineID = "" // the client learns the agent's by discovery
		usm = &u
	}
	if err := snmpdrv.CheckVersion(version, usm); err != nil {
		errs = append(errs, &sensors.KeyError{Key: "version", Err: err})
	} else if usm != nil && version == "3" {
		if _, _, err := usm.Params(); err != nil {
			errs = append(errs, &sensors.KeyError{Key: "v3", Err: err})
		}
	}
	return errors.Join(errs...)
}

// CheckTrapUser reports why u cannot be a v3 user of the trap receiver, without reading its
// password files.
func CheckTrapUser(u sensors.SNMPv3) error {
	return snmptrap.CheckUser(unreadUSM(u))
}

// unreadUSM is u for checking: a password named by a file counts as given.
func unreadUSM(u sensors.SNMPv3) snmpdrv.USM {
	usm := snmpdrv.USM{User: u.User, AuthProtocol: u.AuthProtocol, AuthPass: u.AuthPass,
		PrivProtocol: u.PrivProtocol, PrivPass: u.PrivPass, EngineID: u.EngineID}
	if u.AuthPassFile != "" {
		usm.AuthPass = "(" + u.AuthPassFile + ")"
	}
	if u.PrivPassFile != "" {
		usm.PrivPass = "(" + u.PrivPassFile + ")"
	}
	return usm
}

// ClientConfig turns the agent keys of a device into a drivers/snmp configuration, reading
// the v3 password files. Inline passwords win over files only when no file is given.
func ClientConfig(spec Agent) (snmpdrv.Config, error) {
	cfg := snmpdrv.Config{
		Target:    spec.Target,
		Community: spec.Community,
		Version:   spec.Version,
	}
	if spec.Target == "" {
		return cfg, errors.New("snmp: target is required")
	}
	if spec.V3 != nil {
		if spec.Version == "" {
			cfg.Version = "3" // a v3 block without a version can only mean v3
		}
		u := &snmpdrv.USM{
			User:         spec.V3.User,
			AuthProtocol: spec.V3.AuthProtocol,
			AuthPass:     spec.V3.AuthPass,
			PrivProtocol: spec.V3.PrivProtocol,
			PrivPass:     spec.V3.PrivPass,
		}
		var err error
		if spec.V3.AuthPassFile != "" {
			if u.AuthPass, err = readSecret(spec.V3.AuthPassFile); err != nil {
				return cfg, fmt.Errorf("snmp v3 auth password: %w", err)
			}
		}
		if spec.V3.PrivPassFile != "" {
			if u.PrivPass, err = readSecret(spec.V3.PrivPassFile); err != nil {
				return cfg, fmt.Errorf("snmp v3 priv password: %w", err)
			}
		}
		cfg.V3 = u
	}
	return cfg, nil
}

// readSecret reads a one-line secret file; the trailing newline that editors add is not part
// of the secret.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// metrics checks the metrics of spec and returns them ready to read: OIDs without a leading
// dot, scale 0 made 1.
func metrics(list []Metric) ([]Metric, error) {
	if len(list) == 0 {
		return nil, &sensors.KeyError{Key: "metrics", Err: errors.New("snmp: no metrics")}
	}
	seen := map[string]bool{}
	var out []Metric
	for _, m := range list {
		if m.Name == "" || m.OID == "" {
			return nil, &sensors.KeyError{Key: "metrics", Err: fmt.Errorf("snmp: metric %q: name and oid are required", m.Name)}
		}
		if seen[m.Name] {
			return nil, &sensors.KeyError{Key: "metrics", Err: fmt.Errorf("snmp: metric %q listed twice", m.Name)}
		}
		seen[m.Name] = true
		m.OID = strings.TrimPrefix(strings.TrimSpace(m.OID), ".")
		if !snmpdrv.ValidOID(m.OID) {
			return nil, &sensors.KeyError{Key: "metrics", Err: fmt.Errorf("snmp: metric %q: oid %q is not a numeric OID", m.Name, m.OID)}
		}
		if m.Scale == 0 {
			m.Scale = 1
		}
		out = append(out, m)
	}
	return out, nil
}

// Device is one generic SNMP device.
type Device struct {
	id      string
	client  *snmpdrv.Client
	metrics []Metric
	oids    []string
}

// New makes a generic SNMP device from its spec.
func New(spec sensors.Spec) (*Device, error) {
	o := sensors.Opts[Options](spec)
	cfg, err := ClientConfig(o.Agent)
	if err != nil {
		return nil, err
	}
	ms, err := metrics(o.Metrics)
	if err != nil {
		return nil, err
	}
	d := &Device{id: spec.ID, metrics: ms}
	for _, m := range ms {
		d.oids = append(d.oids, m.OID)
	}
	if d.client, err = snmpdrv.New(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// Poll reads every metric in one GET (split only if the agent asks for it).
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	vals, err := d.client.Get(ctx, d.oids)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.id, err)
	}
	ts := time.Now()
	out := make([]sensors.Reading, 0, len(d.metrics))
	for _, m := range d.metrics {
		v := vals[m.OID]
		switch {
		case v.Missing:
			out = append(out, sensors.Failed(d.id, m.Name, m.Unit, ts))
		case v.IsNum:
			out = append(out, sensors.Num(d.id, m.Name, v.Num*m.Scale, m.Unit, ts))
		case v.Type == "OctetString" || v.Type == "ObjectIdentifier" || v.Type == "IPAddress":
			// A name, a model, a state word: kept as text, unscaled.
			r := sensors.Text(d.id, m.Name, v.Text, ts)
			r.Unit = m.Unit
			out = append(out, r)
		default:
			out = append(out, sensors.Failed(d.id, m.Name, m.Unit, ts))
		}
	}
	return out, nil
}

// Close releases the socket.
func (d *Device) Close() error { return d.client.Close() }
