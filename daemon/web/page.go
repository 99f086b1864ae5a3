package web

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/sensors"
)

// The page answers, at a glance: is the rack safe, what is wrong, what is the appliance doing
// about it, and how long do the batteries last. page.go turns a Status into what the
// page shows; render.go only lays it out.

// Levels, worst last.
const (
	lvlOK   = "ok"
	lvlWarn = "warning"
	lvlCrit = "critical"
)

func worse(a, b string) string {
	if rank(b) > rank(a) {
		return b
	}
	return a
}

func rank(l string) int {
	switch l {
	case lvlCrit:
		return 2
	case lvlWarn:
		return 1
	}
	return 0
}

type pageData struct {
	St        Status
	Now       time.Time
	Banner    banner
	Mains     mainsView
	UPS       []upsView
	Feeds     []deviceView
	Power     *policyView
	Cooling   *policyView
	Sensors   []sensorRow
	Contacts  []contactView
	Relays    []relayView
	Incidents []incidentView
	Others    []deviceView
	Devices   []deviceView
	Charts    []chartGroup
	Range     string
	User      string
	CSRF      string
	CanLogin  bool
	Nonce     string
	Uptime    string
}

type banner struct {
	Level   string
	Title   string
	Reasons []string
}

type mainsView struct {
	Level, Text string
}

type upsView struct {
	ID, Description, Error string
	State                  sensors.DeviceState
	Level                  string
	Words                  string
	Flags                  string
	Charge, Runtime, Load  string
	ChargePct              float64
	Extra                  []kv
}

type kv struct{ K, V, Key string }

type deviceView struct {
	ID, Driver, Description, Error, LastSeen string
	State                                    sensors.DeviceState
	Level                                    string
	Readings                                 []kv
}

type sensorRow struct {
	Device, Metric, Value, Key string
	Thresholds                 string
	Level                      string
	Quality                    string
	State                      sensors.DeviceState
}

type contactView struct {
	ID, Description, Text, Level string
	State                        sensors.DeviceState
}

type relayView struct {
	Relay
	Role  string
	Level string
}

type policyView struct {
	Name, State, Words, Level, Since, Reason string
	Decisions                                []Decision
	Relay                                    string
	RelayOn                                  *bool
	Switch                                   string
	Devices                                  string
}

type incidentView struct {
	incident.Incident
	Opened   string
	OpenedTS string
	For      string
	Acked    string
	Sent     string // notify targets and where the latest event stands at each
}

// upsWords renders ups.status in words, as NUT's flags mean them (RFC 9271 §5.3, NUT's
// docs/new-drivers.txt): the operator reads "On battery · Low battery", not "OB LB".
func upsWords(status string) (words, level string) {
	flags := strings.Fields(status)
	has := map[string]bool{}
	for _, f := range flags {
		has[f] = true
	}
	var w []string
	level = lvlOK
	add := func(s, l string) { w = append(w, s); level = worse(level, l) }
	switch {
	case has["OB"]:
		add("On battery", lvlWarn)
	case has["OL"]:
		add("On mains", lvlOK)
	}
	for _, f := range flags {
		switch f {
		case "LB":
			add("Low battery", lvlCrit)
		case "FSD":
			add("Forced shutdown", lvlCrit)
		case "OFF":
			add("Output off", lvlCrit)
		case "OVER":
			add("Overloaded", lvlCrit)
		case "RB":
			add("Replace battery", lvlWarn)
		case "HB":
			add("Battery high", lvlWarn)
		case "BYPASS":
			add("On bypass", lvlWarn)
		case "CAL":
			add("Calibrating", lvlOK)
		case "CHRG":
			add("Charging", lvlOK)
		case "DISCHRG":
			add("Discharging", lvlOK)
		case "TRIM":
			add("Trimming high input voltage", lvlOK)
		case "BOOST":
			add("Boosting low input voltage", lvlOK)
		case "ALARM":
			add("Alarm", lvlWarn)
		case "WAIT":
			add("Waiting for data", lvlWarn)
		case "OL", "OB":
		default:
			add(f, lvlOK)
		}
	}
	if len(w) == 0 {
		return "Unknown", lvlWarn
	}
	return strings.Join(w, " · "), level
}

// fmtNum prints a number the way a person reads it: no trailing zeros, at most 2 decimals.
func fmtNum(v float64) string {
	if math.Abs(v) >= 1000 || v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	if math.Abs(v) >= 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
}

func fmtValue(r ReadingStatus) string {
	if r.Quality == "error" || r.Value == nil {
		return "—"
	}
	switch v := r.Value.(type) {
	case float64:
		if r.Unit == "" {
			return fmtNum(v)
		}
		return fmtNum(v) + " " + r.Unit
	default:
		return fmt.Sprint(v)
	}
}

func num(r ReadingStatus) (float64, bool) {
	v, ok := r.Value.(float64)
	return v, ok && r.Quality != "error"
}

// fmtDur is a duration as on-call people say it: "45 s", "12 min", "3 h 05 min", "2 d 4 h".
func fmtDur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%d d %d h", int(d.Hours())/24, int(d.Hours())%24)
	}
}

func parseTS(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

func clock(t time.Time) string { return t.UTC().Format("15:04:05") + " UTC" }

func clockS(s string) string {
	if t, ok := parseTS(s); ok {
		return clock(t)
	}
	return s
}

// sections are the page's sections of each driver class.
var sections = map[sensors.Class]string{
	sensors.ClassUPS: "ups", sensors.ClassRelay: "relay", sensors.ClassContact: "contact",
	sensors.ClassEnvironmental: "env", sensors.ClassPower: "feed",
}

// kind sorts a device into a section by its class (else its driver's); a device of no
// particular class (generic SNMP) goes by its readings.
func kind(d DeviceStatus, relays map[string]bool) string {
	if relays[d.ID] {
		return "relay"
	}
	class := sensors.Class(d.Class)
	if class == "" {
		class = sensors.ClassOf(d.Driver)
	}
	if s, ok := sections[class]; ok {
		return s
	}
	has := func(m string) bool { _, ok := d.Readings[m]; return ok }
	switch {
	case has("ups.status"):
		return "ups"
	case has("relay"):
		return "relay"
	case has("contact"):
		return "contact"
	case has("temperature") || has("humidity"):
		return "env"
	case has("power") || has("current") || has("voltage"):
		return "feed"
	}
	return "other"
}

// deviceLevel: a device that is not answering is a warning (its readings are stale); its
// readings' own rules say whether that is critical.
func deviceLevel(state sensors.DeviceState) string {
	if state == sensors.DeviceOK {
		return lvlOK
	}
	return lvlWarn
}

func sortedMetrics(d DeviceStatus) []string {
	ms := make([]string, 0, len(d.Readings))
	for m := range d.Readings {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	return ms
}

func rkey(dev, metric string) string { return dev + "/" + metric }

func mkDevice(d DeviceStatus) deviceView {
	v := deviceView{ID: d.ID, Driver: d.Driver, Description: d.Description, State: d.State, Error: d.Error, Level: deviceLevel(d.State)}
	if t, ok := parseTS(d.LastSeen); ok {
		v.LastSeen = clock(t)
	}
	for _, m := range sortedMetrics(d) {
		v.Readings = append(v.Readings, kv{m, fmtValue(d.Readings[m]), rkey(d.ID, m)})
	}
	return v
}

// thresholds are the numeric rules on one metric.
type threshold struct {
	V     float64
	Level string
	Label string
}

// thresholds are the rule thresholds on one metric, plus the cooling policy's switch points
// on its sensors.
func thresholds(st Status, dev, metric string) []threshold {
	out := thresholdsFor(st.Rules, dev, metric)
	if c := st.Failover.Cooling; c != nil {
		m := c.Metric
		if m == "" {
			m = "temperature"
		}
		for _, d := range c.Devices {
			if d != dev || m != metric {
				continue
			}
			if c.OnAbove != nil {
				out = append(out, threshold{*c.OnAbove, "policy", "backup on > " + fmtNum(*c.OnAbove)})
			}
			if c.OffBelow != nil {
				out = append(out, threshold{*c.OffBelow, "policy", "off < " + fmtNum(*c.OffBelow)})
			}
		}
	}
	return out
}

func thresholdsFor(rules []RuleView, dev, metric string) []threshold {
	var out []threshold
	for _, r := range rules {
		if r.Device != dev || r.Metric != metric {
			continue
		}
		add := func(p *float64, lvl, label string) {
			if p != nil {
				out = append(out, threshold{*p, lvl, label + " " + fmtNum(*p)})
			}
		}
		add(r.WarnAbove, lvlWarn, "warn >")
		add(r.CritAbove, lvlCrit, "crit >")
		add(r.WarnBelow, lvlWarn, "warn <")
		add(r.CritBelow, lvlCrit, "crit <")
	}
	return out
}

// levelOf is where a value stands against the thresholds of its rules.
func levelOf(rules []RuleView, dev, metric string, v float64) string {
	l := lvlOK
	for _, r := range rules {
		if r.Device != dev || r.Metric != metric {
			continue
		}
		if r.CritAbove != nil && v > *r.CritAbove || r.CritBelow != nil && v < *r.CritBelow {
			l = worse(l, lvlCrit)
		} else if r.WarnAbove != nil && v > *r.WarnAbove || r.WarnBelow != nil && v < *r.WarnBelow {
			l = worse(l, lvlWarn)
		}
	}
	return l
}

var powerWords = map[string]string{
	"normal":            "Normal: mains present",
	"on_battery":        "Mains lost: on battery, generator asked to start",
	"generator_timeout": "Generator has not brought mains back",
	"shutdown":          "Shutdown ordered: protected servers are going down",
	"recovered":         "Mains back: recovering",
}

var coolingWords = map[string]string{
	"normal":     "Normal: inlet temperature in range",
	"backup_on":  "Backup cooling running",
	"no_sensors": "No healthy temperature sensor: backup cooling forced on",
}

var policyLevels = map[string]string{
	"on_battery": lvlWarn, "generator_timeout": lvlCrit, "shutdown": lvlCrit, "recovered": lvlWarn,
	"backup_on": lvlWarn, "no_sensors": lvlCrit,
}

func mkPolicy(name string, p *PolicyState, words map[string]string, relays map[string]Relay) *policyView {
	if p == nil {
		return nil
	}
	v := &policyView{Name: name, State: p.State, Words: words[p.State], Level: policyLevels[p.State], Reason: p.Reason, Relay: p.Relay,
		Devices: strings.Join(p.Devices, ", ")}
	if v.Words == "" {
		v.Words = p.State
	}
	if v.Level == "" {
		v.Level = lvlOK
	}
	if t, ok := parseTS(p.Since); ok {
		v.Since = clock(t)
	}
	if p.OnAbove != nil && p.OffBelow != nil {
		v.Switch = fmt.Sprintf("backup on above %s, off below %s", fmtNum(*p.OnAbove), fmtNum(*p.OffBelow))
	}
	if r, ok := relays[p.Relay]; ok {
		on := r.On
		v.RelayOn = &on
	}
	// Newest first: the operator wants to know what just happened.
	for i := len(p.Decisions) - 1; i >= 0; i-- {
		d := p.Decisions[i]
		d.TS = clockS(d.TS)
		v.Decisions = append(v.Decisions, d)
	}
	if len(v.Decisions) > 20 {
		v.Decisions = v.Decisions[:20]
	}
	return v
}

// build makes the page's data from the status.
func build(st Status, now time.Time) pageData {
	p := pageData{St: st, Now: now, Uptime: fmtDur(time.Duration(st.UptimeS) * time.Second)}
	relayByID := map[string]Relay{}
	isRelay := map[string]bool{}
	for _, r := range st.Relays {
		relayByID[r.ID] = r
		isRelay[r.ID] = true
	}
	role := map[string]string{}
	if fp := st.Failover.Power; fp != nil && fp.Relay != "" {
		role[fp.Relay] = "generator"
	}
	if fc := st.Failover.Cooling; fc != nil && fc.Relay != "" {
		role[fc.Relay] = "backup cooling"
	}
	p.Power = mkPolicy("power", st.Failover.Power, powerWords, relayByID)
	p.Cooling = mkPolicy("cooling", st.Failover.Cooling, coolingWords, relayByID)

	devs := append([]DeviceStatus(nil), st.Devices...)
	sort.Slice(devs, func(i, j int) bool { return devs[i].ID < devs[j].ID })
	seenRelay := map[string]bool{}
	// An open incident on a metric colours its value even where the page does not know the
	// rule's thresholds (a trap, a policy, a rule the status does not list).
	incLevel := map[string]string{}
	for _, in := range st.Incidents {
		if in.Device != "" && in.Metric != "" {
			k := rkey(in.Device, in.Metric)
			incLevel[k] = worse(incLevel[k], string(in.Severity))
		}
	}
	onBattery, onMains := []string{}, 0
	var reasons []reason
	for _, d := range devs {
		p.Devices = append(p.Devices, mkDevice(d))
		if d.State != sensors.DeviceOK && d.State != "" {
			msg := fmt.Sprintf("%s is %s", d.ID, d.State)
			if d.Error != "" {
				msg += ": " + d.Error
			}
			reasons = append(reasons, reason{level: lvlWarn, text: msg})
		}
		switch kind(d, isRelay) {
		case "ups":
			u := upsView{ID: d.ID, Description: d.Description, State: d.State, Error: d.Error}
			st := d.Readings["ups.status"]
			if s, ok := st.Value.(string); ok && st.Quality != "error" {
				u.Flags = s
				u.Words, u.Level = upsWords(s)
				fl := " " + s + " "
				if strings.Contains(fl, " OB ") {
					onBattery = append(onBattery, d.ID)
				} else if strings.Contains(fl, " OL ") {
					onMains++
				}
			} else {
				u.Words, u.Level = "No data", lvlWarn
			}
			if st.Quality == "stale" || d.State != sensors.DeviceOK {
				u.Level = worse(u.Level, lvlWarn)
			}
			if c, ok := num(d.Readings["battery.charge"]); ok {
				u.Charge, u.ChargePct = fmtNum(c)+" %", math.Max(0, math.Min(100, c))
			}
			if rt, ok := num(d.Readings["battery.runtime"]); ok {
				u.Runtime = fmt.Sprintf("%d min", int(rt/60))
			}
			if l, ok := num(d.Readings["ups.load"]); ok {
				u.Load = fmtNum(l) + " %"
			}
			for _, m := range sortedMetrics(d) {
				switch m {
				case "ups.status", "battery.charge", "battery.runtime", "ups.load":
					continue
				}
				u.Extra = append(u.Extra, kv{m, fmtValue(d.Readings[m]), rkey(d.ID, m)})
			}
			if u.Flags != "" && u.Level == lvlCrit {
				reasons = append(reasons, reason{level: lvlCrit, text: fmt.Sprintf("%s: %s, %s left", d.ID, u.Words, orDash(u.Runtime))})
			} else if strings.Contains(" "+u.Flags+" ", " OB ") {
				reasons = append(reasons, reason{level: lvlWarn, text: fmt.Sprintf("%s on battery, %s left", d.ID, orDash(u.Runtime))})
			}
			p.UPS = append(p.UPS, u)
		case "feed":
			p.Feeds = append(p.Feeds, mkDevice(d))
		case "env":
			for _, m := range sortedMetrics(d) {
				r := d.Readings[m]
				row := sensorRow{Device: d.ID, Metric: m, Value: fmtValue(r), Key: rkey(d.ID, m), Quality: r.Quality, State: d.State, Level: lvlOK}
				var ts []string
				for _, t := range thresholds(st, d.ID, m) {
					ts = append(ts, t.Label)
				}
				row.Thresholds = strings.Join(ts, ", ")
				if v, ok := num(r); ok {
					row.Level = levelOf(st.Rules, d.ID, m, v)
				}
				row.Level = worse(row.Level, incLevel[row.Key])
				if r.Quality != "good" || d.State != sensors.DeviceOK {
					row.Level = worse(row.Level, lvlWarn)
				}
				p.Sensors = append(p.Sensors, row)
			}
		case "contact":
			c := contactView{ID: d.ID, Description: d.Description, State: d.State, Text: "—", Level: lvlWarn}
			if v, ok := num(d.Readings["contact"]); ok {
				if v != 0 {
					c.Text, c.Level = "Active", worse(levelForContact(st.Rules, d.ID, v), incLevel[rkey(d.ID, "contact")])
				} else {
					c.Text, c.Level = "Inactive", lvlOK
				}
			}
			p.Contacts = append(p.Contacts, c)
		case "relay":
			r, ok := relayByID[d.ID]
			if !ok {
				r = Relay{ID: d.ID, Mode: "auto"}
				if v, ok := num(d.Readings["relay"]); ok {
					r.On = v != 0
				}
			}
			seenRelay[d.ID] = true
			p.Relays = append(p.Relays, mkRelay(r, role[d.ID]))
		default:
			p.Others = append(p.Others, mkDevice(d))
		}
	}
	for _, r := range st.Relays {
		if !seenRelay[r.ID] {
			p.Relays = append(p.Relays, mkRelay(r, role[r.ID]))
		}
	}
	for _, r := range p.Relays {
		if r.Mode == "on" || r.Mode == "off" {
			// An override left behind is how a rack ends up without backup cooling.
			by := ""
			if r.ChangedBy != "" {
				by = " by " + r.ChangedBy
			}
			reasons = append(reasons, reason{level: lvlWarn, text: fmt.Sprintf("relay %s forced %s%s: the policies do not drive it", r.ID, r.Mode, by)})
		}
	}

	switch {
	case len(onBattery) > 0:
		p.Mains = mainsView{lvlWarn, "Lost: " + strings.Join(onBattery, ", ") + " on battery"}
	case onMains > 0:
		p.Mains = mainsView{lvlOK, "Present"}
	default:
		p.Mains = mainsView{lvlWarn, "Unknown (no UPS reading)"}
	}

	incs := append([]incident.Incident(nil), st.Incidents...)
	sort.SliceStable(incs, func(i, j int) bool {
		if !incs[i].OpenedAt.Equal(incs[j].OpenedAt) {
			return incs[i].OpenedAt.After(incs[j].OpenedAt)
		}
		return incs[i].Severity.Rank() > incs[j].Severity.Rank()
	})
	for _, in := range incs {
		iv := incidentView{Incident: in, Opened: clock(in.OpenedAt), OpenedTS: in.OpenedAt.UTC().Format(time.RFC3339), For: fmtDur(now.Sub(in.OpenedAt))}
		if in.AckedAt != nil {
			iv.Acked = fmt.Sprintf("%s at %s", in.AckedBy, clock(*in.AckedAt))
		}
		iv.Sent = sentLine(in.Sent)
		p.Incidents = append(p.Incidents, iv)
		sev := lvlWarn
		if in.Severity == lvlCrit {
			sev = lvlCrit
		}
		what := in.Summary
		if what == "" {
			what = in.Rule + " on " + in.Device
		}
		if in.AckedBy != "" {
			what += " (acknowledged by " + in.AckedBy + ")"
		}
		reasons = append(reasons, reason{sev, what, in.AckedBy != ""})
	}
	if p.Power != nil && p.Power.Level != lvlOK {
		reasons = append(reasons, reason{level: p.Power.Level, text: "Power: " + p.Power.Words})
	}
	if p.Cooling != nil && p.Cooling.Level != lvlOK {
		reasons = append(reasons, reason{level: p.Cooling.Level, text: "Cooling: " + p.Cooling.Words})
	}
	p.Banner = mkBanner(reasons)
	return p
}

func orDash(s string) string {
	if s == "" {
		return "unknown runtime"
	}
	return s
}

func levelForContact(rules []RuleView, dev string, v float64) string {
	l := ""
	for _, r := range rules {
		if r.Device == dev && r.Metric == "contact" {
			sev := r.Severity
			if sev == "" {
				sev = incident.Critical
			}
			l = worse(l, string(sev))
		}
	}
	if l == "" {
		return lvlWarn
	}
	return l
}

func mkRelay(r Relay, role string) relayView {
	v := relayView{Relay: r, Role: role, Level: lvlOK}
	if r.Changed != "" {
		v.Changed = clockS(r.Changed)
	}
	if r.Mode != "auto" && r.Mode != "" {
		v.Level = lvlWarn // an override is something the next shift must know about
	}
	return v
}

type reason struct {
	level, text string
	acked       bool // acknowledged: someone is on it, so it goes after the others
}

// mkBanner: the worst level wins; reasons are listed worst first, at most five.
func mkBanner(rs []reason) banner {
	b := banner{Level: lvlOK, Title: "OK"}
	sort.SliceStable(rs, func(i, j int) bool {
		if rank(rs[i].level) != rank(rs[j].level) {
			return rank(rs[i].level) > rank(rs[j].level)
		}
		return !rs[i].acked && rs[j].acked
	})
	for _, r := range rs {
		b.Level = worse(b.Level, r.level)
	}
	switch b.Level {
	case lvlCrit:
		b.Title = "CRITICAL"
	case lvlWarn:
		b.Title = "WARNING"
	}
	for i, r := range rs {
		if i == 5 {
			b.Reasons = append(b.Reasons, fmt.Sprintf("… and %d more", len(rs)-5))
			break
		}
		b.Reasons = append(b.Reasons, r.text)
	}
	if len(b.Reasons) == 0 {
		b.Reasons = []string{"Power, cooling and every device are normal."}
	}
	return b
}

// sentLine says where an incident was sent: "nms ✔ · oncall waiting".
func sentLine(sent map[string]string) string {
	names := make([]string, 0, len(sent))
	for t := range sent {
		names = append(names, t)
	}
	sort.Strings(names)
	words := map[string]string{"delivered": "✔", "queued": "waiting", "dropped": "dropped"}
	var parts []string
	for _, t := range names {
		w := words[sent[t]]
		if w == "" {
			w = sent[t]
		}
		parts = append(parts, t+" "+w)
	}
	return strings.Join(parts, " · ")
}
