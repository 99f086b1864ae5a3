// Package config reads and checks a site's YAML config (CONTRACT.md §2). Every problem is
// reported as FILE:LINE: message, all of them at once, so an operator fixes a file in one go.
// What the runtime would refuse it asks the part that refuses it (the uplink, the NUT server,
// the drivers through the sensors registry), so -check and a start judge a value the same
// way, and keeps no second list of the values those parts accept. It must not import the site's
// wiring (daemon/site) nor any part that imports config.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/notify"
	"github.com/rackwatch/rackwatch/sensors"
)

// Config is a whole site.
type Config struct {
	Site      string         `yaml:"site"`
	Node      string         `yaml:"node"`
	DataDir   string         `yaml:"data_dir"`
	Web       Web            `yaml:"web"`
	MQTT      MQTT           `yaml:"mqtt"`
	NUT       NUT            `yaml:"nut"`
	Traps     Traps          `yaml:"traps"`
	Devices   []sensors.Spec `yaml:"devices"`
	Rules     []Rule         `yaml:"rules"`
	Failover  Failover       `yaml:"failover"`
	Incidents Incidents      `yaml:"incidents"`
	Audit     Audit          `yaml:"audit"`
	Notify    notify.Config  `yaml:"notify"`
	Update    Update         `yaml:"update"`

	// Path is the file the config came from ("" for the built-in demo).
	Path string `yaml:"-"`
}

// Web is the local HTTP server.
type Web struct {
	Listen       string `yaml:"listen"`
	UsersFile    string `yaml:"users_file"`
	RequireLogin bool   `yaml:"require_login"`
	TLSCert      string `yaml:"tls_cert"`
	TLSKey       string `yaml:"tls_key"`
	// Connection limits and timeouts; 0 is the web package's default (README: "Limits
	// against a hostile network").
	MaxConns          int           `yaml:"max_conns"`
	MaxConnsPerAddr   int           `yaml:"max_conns_per_addr"`
	MaxEventStreams   int           `yaml:"max_event_streams"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
}

// MQTT is the uplink to central ITOps.
type MQTT struct {
	Brokers           []string      `yaml:"brokers"`
	Prefix            string        `yaml:"prefix"`
	ClientID          string        `yaml:"client_id"`
	Username          string        `yaml:"username"`
	PasswordFile      string        `yaml:"password_file"`
	TLS               TLS           `yaml:"tls"`
	TelemetryInterval time.Duration `yaml:"telemetry_interval"`
	TelemetryQoS      *int          `yaml:"telemetry_qos"`
	QueueMaxBytes     int64         `yaml:"queue_max_bytes"`
	// QueueFlush (default 5m) holds telemetry instead of committing each message: it is
	// published at once and committed to the queue only if no broker acknowledged it within
	// QueueFlush (uplink.Options.TelemetryFlush). 0 commits every message before it is
	// published. Incidents are always committed first.
	QueueFlush     *time.Duration `yaml:"queue_flush"`
	EmbeddedBroker string         `yaml:"embedded_broker"`
	// Homeassistant publishes Home Assistant MQTT discovery configs under
	// HomeassistantPrefix (default homeassistant; uplink/homeassistant).
	Homeassistant       bool   `yaml:"homeassistant"`
	HomeassistantPrefix string `yaml:"homeassistant_prefix"`
	// Format of telemetry: "json" (default, R/telemetry) or "sparkplug_b" (a Sparkplug B
	// edge node instead; incidents, state, commands and audit stay JSON).
	Format    string    `yaml:"format"`
	Sparkplug Sparkplug `yaml:"sparkplug"`
}

// Sparkplug is the edge node of mqtt.format sparkplug_b; its edge node id is the node.
type Sparkplug struct {
	Group       string `yaml:"group"`        // default: the site
	PrimaryHost string `yaml:"primary_host"` // host id whose STATE gates the births; "" = none
}

// TLS names the PEM files of an MQTT TLS connection.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// NUT is the NUT (upsd protocol) server.
type NUT struct {
	Listen      string        `yaml:"listen"`
	Users       []NUTUser     `yaml:"users"`
	MaxConns    int           `yaml:"max_conns"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	TLSCert     string        `yaml:"tls_cert"`
	TLSKey      string        `yaml:"tls_key"`
	// MaxConnsPerAddr caps one address's share of max_conns; 0 is the nut package's
	// default (16, at most half of max_conns).
	MaxConnsPerAddr int `yaml:"max_conns_per_addr"`
}

// NUTUser is one upsd.users entry.
type NUTUser struct {
	Name         string   `yaml:"name"`
	PasswordFile string   `yaml:"password_file"`
	Password     string   `yaml:"password"` // for demos and tests; password_file is preferred
	Upsmon       string   `yaml:"upsmon"`   // secondary (default) or primary
	Instcmds     []string `yaml:"instcmds"` // allowed instant commands; "all" for every one
}

// Traps is the SNMP trap receiver.
type Traps struct {
	Listen      string           `yaml:"listen"`
	Communities []string         `yaml:"communities"` // accepted v1/v2c communities; empty = any
	Users       []sensors.SNMPv3 `yaml:"users"`       // accepted v3 users
	// ResolveAfter closes a trap-raised incident that no poll clears (default 15m).
	ResolveAfter time.Duration `yaml:"resolve_after"`
	// Sources may open incidents besides the devices: addresses or CIDR prefixes.
	Sources []string `yaml:"sources"`
	Rate    float64  `yaml:"rate"`     // traps per second per sender (default 1)
	Burst   int      `yaml:"burst"`    // traps per sender at once (default 20)
	MaxOpen int      `yaml:"max_open"` // open trap incidents per sender (default 20)
}

// Rule is one threshold or state rule.
type Rule struct {
	Name       string            `yaml:"name"`
	Device     string            `yaml:"device"`
	Metric     string            `yaml:"metric"`
	WarnAbove  *float64          `yaml:"warn_above"`
	CritAbove  *float64          `yaml:"crit_above"`
	WarnBelow  *float64          `yaml:"warn_below"`
	CritBelow  *float64          `yaml:"crit_below"`
	Hysteresis float64           `yaml:"hysteresis"`
	For        time.Duration     `yaml:"for"`
	StatusHas  string            `yaml:"status_has"`
	Equals     *sensors.Value    `yaml:"equals"`
	Severity   incident.Severity `yaml:"severity"`
}

// Failover holds the local policies.
type Failover struct {
	Power   *Power   `yaml:"power"`
	Cooling *Cooling `yaml:"cooling"`
}

// Power is the power policy (CONTRACT.md §2 failover.power).
type Power struct {
	UPS                  []string      `yaml:"ups"`
	GeneratorRelay       string        `yaml:"generator_relay"`
	GeneratorTimeout     time.Duration `yaml:"generator_timeout"`
	ShutdownRuntimeBelow time.Duration `yaml:"shutdown_runtime_below"`
	ShutdownCommand      string        `yaml:"shutdown_command"`
	// ConfirmPolls is how many consecutive polls a shutdown condition must hold (default 2).
	ConfirmPolls int `yaml:"confirm_polls"`
	// RecoverFor is how long mains must be back steadily before the policy recovers (60s).
	RecoverFor time.Duration `yaml:"recover_for"`
	// GeneratorCooldown is how long the generator runs on after mains returns (5m).
	GeneratorCooldown time.Duration `yaml:"generator_cooldown"`
	// AutoClear clears FSD once mains is back without an operator's acknowledgement.
	AutoClear bool `yaml:"auto_clear"`
	// GeneratorDevice is the generator controller that confirms the start: engine.running 1
	// and a generator.voltage reading within GeneratorStartWithin (30s) of the relay.
	GeneratorDevice      string        `yaml:"generator_device"`
	GeneratorStartWithin time.Duration `yaml:"generator_start_within"`
}

// Cooling is the cooling policy.
type Cooling struct {
	Sensors     []string      `yaml:"sensors"`
	Metric      string        `yaml:"metric"` // default temperature
	BackupRelay string        `yaml:"backup_relay"`
	OnAbove     *float64      `yaml:"on_above"`
	OffBelow    *float64      `yaml:"off_below"`
	For         time.Duration `yaml:"for"`
}

// Incidents bounds the incident history.
type Incidents struct {
	Retention   time.Duration `yaml:"retention"`    // resolved incidents kept (default 90 days)
	FlapCount   int           `yaml:"flap_count"`   // more flips than this …
	FlapWindow  time.Duration `yaml:"flap_window"`  // … within this: one incident with a flap count
	MaxResolved int           `yaml:"max_resolved"` // and at most this many resolved ones (10000)
	StormLimit  int           `yaml:"storm_limit"`  // incidents one source may open a minute (30)
}

// Audit is the audit trail (CONTRACT.md §7).
type Audit struct {
	Retention time.Duration `yaml:"retention"` // records kept (default 400 days)
}

// Update is the firmware updater (CONTRACT.md §8).
type Update struct {
	CommitAfter time.Duration `yaml:"commit_after"` // healthy run before a new slot commits (60s)
	MaxBytes    int64         `yaml:"max_bytes"`    // largest bundle accepted (256 MiB)
	CAFile      string        `yaml:"ca_file"`      // CAs for the MQTT command's HTTPS download ("": the system's)
}

// Problem is one thing wrong with a config file.
type Problem struct {
	File string
	Line int
	Msg  string
}

func (p Problem) Error() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// Problems is every problem found, in line order.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes, defaults and checks a config file. A non-nil error is Problems.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Problems{{File: path, Msg: err.Error()}}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, Problems{{File: path, Msg: err.Error()}}
	}
	return Parse(path, b)
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var fieldRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)`)

// Parse is Load on bytes; name is used in the messages.
func Parse(name string, b []byte) (*Config, error) {
	if len(b) > MaxBytes {
		return nil, Problems{{File: name, Msg: fmt.Sprintf("larger than %d bytes (1 MiB), the most a config may be; is it the right file?", MaxBytes)}}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, Problems{yamlProblem(name, err.Error())}
	}
	var ps Problems
	cfg := &Config{Path: name}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				ps = append(ps, yamlProblem(name, e))
			}
		} else {
			ps = append(ps, yamlProblem(name, err.Error()))
		}
	}
	for _, d := range cfg.Devices {
		for _, p := range d.Problems() {
			ps = append(ps, yamlProblem(name, p))
		}
	}
	c := checker{file: name, root: &root}
	if len(root.Content) > 0 {
		c.root = root.Content[0]
	}
	cfg.applyDefaults()
	c.check(cfg)
	c.checkFinite(c.root, "")
	if c.root != nil && c.root.Kind == yaml.MappingNode {
		lines := map[int]bool{}
		for _, p := range c.problems {
			lines[p.Line] = true
		}
		c.checkNegative(reflect.ValueOf(cfg).Elem(), nil, lines)
	}
	ps = append(ps, c.problems...)
	if len(ps) > 0 {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
		return cfg, ps
	}
	return cfg, nil
}

func yamlProblem(file, msg string) Problem {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		text := m[2]
		if f := fieldRE.FindStringSubmatch(text); f != nil {
			text = fmt.Sprintf("unknown key %q", cut(f[1]))
		}
		text = strings.Replace(text, "cannot unmarshal !!str", "cannot read", 1)
		text = strings.Replace(text, "into time.Duration", "as a duration (use Go durations like 30s, 5m)", 1)
		return Problem{File: file, Line: n, Msg: cutMsg(cutRuns(text))}
	}
	return Problem{File: file, Msg: cutMsg(cutRuns(msg))}
}

// DefaultDataDir is the data folder when the config names none: $XDG_STATE_HOME/rackwatch,
// /var/lib/rackwatch for root, else ~/.local/state/rackwatch.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "rackwatch")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/rackwatch"
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "rackwatch")
	}
	return filepath.Join(os.TempDir(), "rackwatch")
}

// DefaultQueueFlush is mqtt.queue_flush when the file does not set it.
const DefaultQueueFlush = 5 * time.Minute

func (c *Config) applyDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir()
	}
	if c.Web.Listen == "" {
		c.Web.Listen = "127.0.0.1:8080"
	}
	if c.MQTT.Prefix == "" {
		c.MQTT.Prefix = "rackwatch"
	}
	if c.MQTT.ClientID == "" {
		c.MQTT.ClientID = "rackwatch-" + c.Site + "-" + c.Node
	}
	if c.MQTT.TelemetryInterval == 0 {
		c.MQTT.TelemetryInterval = 10 * time.Second
	}
	if c.MQTT.TelemetryQoS == nil {
		q := 1
		c.MQTT.TelemetryQoS = &q
	}
	if c.MQTT.QueueFlush == nil {
		d := DefaultQueueFlush
		c.MQTT.QueueFlush = &d
	}
	if c.MQTT.QueueMaxBytes == 0 {
		c.MQTT.QueueMaxBytes = 256 << 20
	}
	if c.MQTT.HomeassistantPrefix == "" {
		c.MQTT.HomeassistantPrefix = "homeassistant"
	}
	if c.MQTT.Format == "sparkplug_b" && c.MQTT.Sparkplug.Group == "" {
		c.MQTT.Sparkplug.Group = c.Site
	}
	if len(c.MQTT.Brokers) == 0 && c.MQTT.EmbeddedBroker != "" {
		c.MQTT.Brokers = []string{"tcp://" + c.MQTT.EmbeddedBroker}
	}
	if c.NUT.MaxConns == 0 {
		c.NUT.MaxConns = 64
	}
	if c.NUT.IdleTimeout == 0 {
		c.NUT.IdleTimeout = 5 * time.Minute
	}
	if c.Traps.ResolveAfter == 0 {
		c.Traps.ResolveAfter = 15 * time.Minute
	}
	for i := range c.Devices {
		d := &c.Devices[i]
		if d.Poll == 0 {
			d.Poll = 5 * time.Second
		}
		if d.Timeout == 0 {
			d.Timeout = min(d.Poll, 5*time.Second)
		}
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.Severity == "" && (r.StatusHas != "" || r.Equals != nil) {
			r.Severity = incident.Critical
		}
	}
	if p := c.Failover.Power; p != nil {
		if p.ConfirmPolls == 0 {
			p.ConfirmPolls = 2
		}
		if p.RecoverFor == 0 {
			p.RecoverFor = time.Minute
		}
		if p.GeneratorCooldown == 0 {
			p.GeneratorCooldown = 5 * time.Minute
		}
		if p.GeneratorTimeout == 0 {
			p.GeneratorTimeout = 60 * time.Second
		}
		if p.GeneratorStartWithin == 0 {
			p.GeneratorStartWithin = 30 * time.Second
		}
	}
	if cl := c.Failover.Cooling; cl != nil && cl.Metric == "" {
		cl.Metric = "temperature"
	}
	if c.Incidents.Retention == 0 {
		c.Incidents.Retention = 90 * 24 * time.Hour
	}
	if c.Audit.Retention == 0 {
		c.Audit.Retention = 400 * 24 * time.Hour
	}
	if c.Update.CommitAfter == 0 {
		c.Update.CommitAfter = 60 * time.Second
	}
	if c.Update.MaxBytes == 0 {
		c.Update.MaxBytes = 256 << 20
	}
	if c.Incidents.FlapCount == 0 {
		c.Incidents.FlapCount = 5
	}
	if c.Incidents.FlapWindow == 0 {
		c.Incidents.FlapWindow = 10 * time.Minute
	}
	if c.Incidents.MaxResolved == 0 {
		c.Incidents.MaxResolved = 10000
	}
	c.Notify.ApplyDefaults()
}

// Device returns the spec of the device with that id.
func (c *Config) Device(id string) (sensors.Spec, bool) {
	for _, d := range c.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return sensors.Spec{}, false
}
