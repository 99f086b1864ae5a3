package notify

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/sensors"
)

// DefaultEnterprise is notify.enterprise when the config sets none: the private enterprise
// number IANA reserves for documentation (RFC 5612).
const DefaultEnterprise = 32473

// Defaults of a target's queue and retries.
const (
	DefaultQueueMax      = 10000
	DefaultQueueMaxBytes = 16 << 20
	DefaultRetryMax      = 5 * time.Minute
	DefaultTimeout       = 10 * time.Second
	// MaxBody bounds what a webhook reads of an answer (and so what a slow or hostile
	// receiver can make the daemon hold).
	MaxBody = 64 << 10
)

// Config is the notify section (CONTRACT.md §7).
type Config struct {
	Targets    []Target `yaml:"targets"`
	Routes     []Route  `yaml:"routes"`
	Enterprise int      `yaml:"enterprise"`
	// PageURL is the page's address put into e-mails and webhooks ("" = none).
	PageURL string `yaml:"page_url"`
}

// Target is one place events go.
type Target struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"` // snmp, syslog, webhook, email
	// Audit sends the audit trail's records to this target too.
	Audit bool `yaml:"audit"`

	// snmp
	Target    string          `yaml:"target"` // host:port (snmp, syslog)
	Version   string          `yaml:"version"`
	Community string          `yaml:"community"`
	V3        *sensors.SNMPv3 `yaml:"v3"`

	// syslog
	Transport string `yaml:"transport"` // udp, tcp, tls
	Facility  string `yaml:"facility"`
	CAFile    string `yaml:"ca_file"` // syslog tls, webhook https

	// webhook
	URL        string `yaml:"url"`
	Format     string `yaml:"format"` // generic, alertmanager, pagerduty
	SecretFile string `yaml:"secret_file"`
	RoutingKey string `yaml:"routing_key"` // pagerduty: the integration key
	// RoutingKeyFile keeps the integration key out of the config.
	RoutingKeyFile string `yaml:"routing_key_file"`

	// email
	SMTP         string   `yaml:"smtp"` // host:port
	From         string   `yaml:"from"`
	To           []string `yaml:"to"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	// StartTLS: "opportunistic" (default: when the server offers it), "mandatory" or "off".
	StartTLS string `yaml:"starttls"`

	// every type
	Timeout       time.Duration `yaml:"timeout"`
	RetryMax      time.Duration `yaml:"retry_max"`
	QueueMax      int           `yaml:"queue_max"`
	QueueMaxBytes int64         `yaml:"queue_max_bytes"`
}

// Route sends the events that match it to its targets.
type Route struct {
	Severity      incident.Severity `yaml:"severity"`
	Device        string            `yaml:"device"`
	Rule          string            `yaml:"rule"`
	Targets       []string          `yaml:"targets"`
	EscalateAfter time.Duration     `yaml:"escalate_after"`
	EscalateTo    []string          `yaml:"escalate_to"`
	RepeatEvery   time.Duration     `yaml:"repeat_every"`
}

// Types are the target types.
var Types = []string{"snmp", "syslog", "webhook", "email"}

// Formats are the webhook formats.
var Formats = []string{"generic", "alertmanager", "pagerduty"}

var facilities = map[string]int{"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
	"news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18,
	"local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23}

var nameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)

// ApplyDefaults fills what the config leaves out.
func (c *Config) ApplyDefaults() {
	if c.Enterprise == 0 {
		c.Enterprise = DefaultEnterprise
	}
	for i := range c.Targets {
		t := &c.Targets[i]
		if t.QueueMax == 0 {
			t.QueueMax = DefaultQueueMax
		}
		if t.QueueMaxBytes == 0 {
			t.QueueMaxBytes = DefaultQueueMaxBytes
		}
		if t.RetryMax == 0 {
			t.RetryMax = DefaultRetryMax
		}
		if t.Timeout == 0 {
			t.Timeout = DefaultTimeout
		}
		switch t.Type {
		case "snmp":
			if t.Version == "" {
				t.Version = "2c"
				if t.V3 != nil {
					t.Version = "3"
				}
			}
			if t.Community == "" && t.Version != "3" {
				t.Community = "public"
			}
		case "syslog":
			if t.Transport == "" {
				t.Transport = "udp"
			}
			if t.Facility == "" {
				t.Facility = "local0"
			}
		case "webhook":
			if t.Format == "" {
				t.Format = "generic"
			}
		case "email":
			if t.StartTLS == "" {
				t.StartTLS = "opportunistic"
			}
		}
	}
}

// CheckTarget says what is wrong with a target (after ApplyDefaults), all problems joined.
func CheckTarget(t Target) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(t.Name) {
		bad("target name %q: use lower-case letters, digits, - and _ only", t.Name)
	}
	hostPort := func(key, v string) {
		if v == "" {
			bad("%s is required", key)
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad("%s %q: write host:port", key, v)
		}
	}
	switch t.Type {
	case "snmp":
		hostPort("target", t.Target)
		switch t.Version {
		case "2c":
		case "3":
			if t.V3 == nil || t.V3.User == "" {
				bad("version 3 needs v3: {user: ...}")
			} else if err := checkSNMPUser(t.V3); err != nil {
				bad("v3: %v", err)
			}
		default:
			bad("version %q: use 2c (trap) or 3 (inform)", t.Version)
		}
	case "syslog":
		hostPort("target", t.Target)
		if !slices.Contains([]string{"udp", "tcp", "tls"}, t.Transport) {
			bad("transport %q: use udp, tcp or tls", t.Transport)
		}
		if _, ok := facilities[t.Facility]; !ok {
			bad("facility %q: use a syslog facility name such as local0", t.Facility)
		}
	case "webhook":
		u, err := url.Parse(t.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("url %q: write an http:// or https:// URL", t.URL)
		}
		if !slices.Contains(Formats, t.Format) {
			bad("format %q: use %s", t.Format, strings.Join(Formats, ", "))
		}
		if t.Format == "pagerduty" && t.RoutingKey == "" && t.RoutingKeyFile == "" {
			bad("format pagerduty needs routing_key or routing_key_file")
		}
	case "email":
		hostPort("smtp", t.SMTP)
		if _, err := mail.ParseAddress(t.From); err != nil {
			bad("from %q: not an e-mail address", t.From)
		}
		if len(t.To) == 0 {
			bad("to is required")
		}
		for _, a := range t.To {
			if _, err := mail.ParseAddress(a); err != nil {
				bad("to %q: not an e-mail address", a)
			}
		}
		if !slices.Contains([]string{"opportunistic", "mandatory", "off"}, t.StartTLS) {
			bad("starttls %q: use opportunistic, mandatory or off", t.StartTLS)
		}
		if t.PasswordFile != "" && t.Username == "" {
			bad("password_file needs username")
		}
	default:
		bad("type %q: use %s", t.Type, strings.Join(Types, ", "))
	}
	if t.Audit && t.Type == "webhook" && t.Format != "generic" {
		bad("audit: true needs format generic: %s takes alerts, and an audit record is not one", t.Format)
	}
	if t.QueueMax < 0 || t.QueueMaxBytes < 0 || t.RetryMax < 0 || t.Timeout < 0 {
		bad("queue_max, queue_max_bytes, retry_max and timeout cannot be negative")
	}
	return errors.Join(errs...)
}

// CheckRoute says what is wrong with a route, given the targets' names.
func CheckRoute(r Route, targets map[string]bool) error {
	var errs []error
	if r.Severity != "" && !r.Severity.Valid() {
		errs = append(errs, fmt.Errorf("severity %q: use warning or critical", r.Severity))
	}
	if len(r.Targets) == 0 {
		errs = append(errs, errors.New("targets is required"))
	}
	for _, n := range append(slices.Clone(r.Targets), r.EscalateTo...) {
		if !targets[n] {
			errs = append(errs, fmt.Errorf("no target %q", n))
		}
	}
	if (r.EscalateAfter > 0) != (len(r.EscalateTo) > 0) {
		errs = append(errs, errors.New("escalate_after and escalate_to go together"))
	}
	if r.EscalateAfter < 0 || r.RepeatEvery < 0 {
		errs = append(errs, errors.New("escalate_after and repeat_every cannot be negative"))
	}
	if r.RepeatEvery > 0 && r.RepeatEvery < time.Minute {
		errs = append(errs, fmt.Errorf("repeat_every %v is below the floor of 1m", r.RepeatEvery))
	}
	return errors.Join(errs...)
}

// CheckEnterprise checks notify.enterprise.
func CheckEnterprise(n int) error {
	if n <= 0 || n > 1<<31-1 {
		return fmt.Errorf("enterprise %d: use the site's IANA private enterprise number", n)
	}
	return nil
}

// PageURL is notify.page_url's default, guessed from web.listen: a wildcard or loopback host
// is replaced by the machine's name, which is what a reader elsewhere can use.
func PageURL(listen string, tls bool) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
		host = hostname()
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}
