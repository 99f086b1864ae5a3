package web

import (
	"bytes"
	"html/template"
	"strconv"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/state"
	"github.com/rackwatch/rackwatch/daemon/update"
	"github.com/rackwatch/rackwatch/sensors"
)

// refTemplates are the html/template page and login templates that render.go replaced, kept
// in testdata as the reference for its output and escaping, with the FuncMap they had; the
// pages' CSS and script are the assets, as they are, so that editing those breaks nothing here.
func refTemplates(t testing.TB) *template.Template {
	t.Helper()
	tmpl := template.Must(template.New("page").Funcs(template.FuncMap{
		"deref":    func(b *bool) bool { return b != nil && *b },
		"css":      func() template.CSS { return template.CSS(pageCSS) },
		"js":       func() template.JS { return template.JS(pageJS) },
		"loginCSS": func() template.CSS { return template.CSS(loginCSS) },
	}).ParseFiles("testdata/index.html.tmpl", "testdata/login.html.tmpl"))
	template.Must(tmpl.New("style").Parse("<style nonce=\"{{.Nonce}}\">\n{{css}}</style>"))
	template.Must(tmpl.New("script").Parse("<script nonce=\"{{.Nonce}}\">\n{{js}}</script>"))
	return tmpl
}

// nasty is what a config, a device or an operator could put in a string: every character
// html/template escapes in text and attributes, NUL, a newline, markup, non-ASCII and a byte
// that is not UTF-8.
const nasty = `a<b>&"c'+d` + "\x00\n" + `</script><!--é€` + "\xff"

// urlNasty goes into ids that end up in a form action's URL path: characters a URL keeps,
// ones it must encode, valid and broken percent escapes.
const urlNasty = `/x y?q=1&r#f%41%4g%zz%(é)'"<>+;:@$,!*~[]` + "%"

func renderCases() map[string]pageData {
	on, off := true, false
	now := time.Date(2026, 11, 25, 3, 4, 5, 0, time.UTC)
	full := pageData{
		St: Status{Site: "s" + nasty, Node: "n1", Version: "v1+x",
			Uplink:   Uplink{Connected: true, Broker: "tcp://b:1883", Queued: 3, Dropped: 2, LastError: "e" + nasty},
			NUT:      NUTStatus{Listen: "127.0.0.1:3493", Clients: []string{"c1", "c2" + nasty}},
			Firmware: update.Firmware{Version: "2026.11.1" + nasty, Slot: "B" + nasty, Committed: false, Updates: "ab", LastUpdate: &update.LastUpdate{Version: "2026.11.1", Outcome: "trial", At: "2026-11-25T03:00:00Z" + nasty}}},
		Now:    now,
		Banner: banner{Level: "critical", Title: "ON BATTERY", Reasons: []string{"r1", "r2" + nasty}},
		Mains:  mainsView{Level: "warning", Text: "lost"},
		UPS: []upsView{{ID: "ups1" + nasty, Description: "d" + nasty, State: "error", Level: "warning", Words: "On battery", Flags: "OB DISCHRG" + nasty,
			Charge: "87 %", Runtime: "12 min", Load: "", ChargePct: 87.5, Extra: []kv{{K: "k" + nasty, V: "v"}, {K: "k2", V: "v2" + nasty}}},
			{ID: "ups2", State: "ok", Level: "ok", ChargePct: 1e21}, {ID: "ups3", State: "stale", Charge: "3 %", ChargePct: 3}},
		Feeds:    []deviceView{{ID: "feed-a", State: "stale", Readings: []kv{{V: "230 V"}, {V: "1.2 A" + nasty}}}, {ID: "feed-b" + nasty, State: "ok"}},
		Power:    &policyView{Name: "power", State: "on_battery", Words: "w", Level: "warning", Since: "03:00", Reason: "r" + nasty, Relay: "genset", RelayOn: &on, Switch: "sw", Devices: "ups1, ups2", Decisions: []Decision{{TS: "t1", Action: "a" + nasty, Reason: "why"}}},
		Cooling:  &policyView{Name: "cooling" + nasty, State: "normal", Relay: "crac2", RelayOn: &off, Devices: "inlet"},
		Sensors:  []sensorRow{{Device: "inlet", Metric: "temperature", Value: "21.5 °C", Level: "ok", Quality: "good"}, {Device: "x" + nasty, Metric: "humidity", Value: "—", Quality: "stale" + nasty, Thresholds: "warn > 30"}},
		Contacts: []contactView{{ID: "door", Description: "front" + nasty, State: "ok", Text: "closed", Level: "ok"}, {ID: "leak", State: "error", Text: "?"}},
		Relays: []relayView{{Relay: Relay{ID: "genset", On: true, Mode: "on", ChangedBy: "op" + nasty, Why: "test", Changed: "03:01", Engine: "running, 231 V" + nasty}, Role: "generator", Level: "warning"},
			{Relay: Relay{ID: "r" + urlNasty, Mode: "auto"}, Level: "ok"}, {Relay: Relay{ID: "r3", Mode: "off" + nasty}, Role: "backup cooling"}},
		Incidents: []incidentView{{Incident: incident.Incident{ID: "inc" + urlNasty + nasty, Rule: "hot", Device: "inlet", Severity: "critical", State: "open", Summary: "s" + nasty, Flaps: 2},
			Opened: "03:00", OpenedTS: "2026-11-25T03:00:00Z", For: "4 min", Sent: "ops-hook delivered, mail queued" + nasty},
			{Incident: incident.Incident{ID: "inc2", Rule: "door", Severity: "warning", State: "open"}, Acked: "alice" + nasty, Sent: "x"},
			{Incident: incident.Incident{ID: "%41%2F", Rule: "r" + nasty, Severity: "warning" + nasty, State: "escalated" + nasty}}},
		Others:  []deviceView{{ID: "o1", Driver: "snmp" + nasty, Readings: []kv{{K: "a", V: "1"}, {K: "b" + nasty, V: "2"}}}},
		Devices: []deviceView{{ID: "ups1" + nasty, Driver: "upsmib", Description: "d" + nasty, State: "error", Error: "timeout" + nasty, LastSeen: "03:00", Readings: []kv{{K: "a", V: "1"}, {K: "b", V: "2" + nasty}}}, {ID: "x", State: "ok"}},
		Charts: []chartGroup{{Device: "inlet" + nasty, Charts: []chartView{
			{Device: "inlet" + nasty, Metric: "temperature" + nasty, Unit: "°C", Path: "M0 1L2 3", Lines: []chartLine{{Y: "10", Level: "warning", Label: "30" + nasty}}, YMax: "31", YMin: "19", DotX: "300", DotY: "50", Last: "21" + nasty, TH: `[{"v":30,"l":"warning","t":"warn > 30"}]`},
			{Device: "inlet", Metric: "humidity", Empty: true}}}},
		Range: "24h", User: "bob" + nasty, CSRF: "tok+en/=" + nasty, CanLogin: true, Nonce: "nonce" + nasty, Uptime: "1 h",
	}
	anon := full
	anon.User, anon.CSRF, anon.Range = "", "", "1h"
	anon.St.Firmware = &update.Firmware{Version: "1.0", Committed: true, Updates: "apt"}
	noLogin := anon
	noLogin.CanLogin = false
	noLogin.St.Firmware = (*update.Firmware)(nil)
	empty := pageData{Now: now, Range: "1h", Nonce: "n"}
	cases := map[string]pageData{"full": full, "anonymous": anon, "no login": noLogin, "empty": empty}
	for i, o := range []string{"committed", "installed", "trial", "rolled_back", "failed" + nasty, ""} {
		d := full
		d.St.Firmware = update.Firmware{Version: "2", Slot: "A", Committed: true, Updates: "ab",
			LastUpdate: &update.LastUpdate{Version: "3" + nasty, Outcome: o, At: "t", Error: map[bool]string{true: "bad signature" + nasty}[o != "committed"]}}
		cases["firmware outcome "+strconv.Itoa(i)] = d
	}
	for name, st := range realisticStatuses(now) {
		d := build(st, now)
		d.Range, d.Nonce, d.CanLogin = "1h", "nonce", true
		d.Charts = charts(st, now, time.Hour, realisticHistory(st, now).History)
		cases[name] = d
		d.User, d.CSRF = "operator", "csrf-token"
		cases[name+" logged in"] = d
	}
	return cases
}

// realisticStatuses are what a site reports: every kind of device, incidents open, acked and
// sent, both policies with their relays, firmware on trial.
func realisticStatuses(now time.Time) map[string]Status {
	ts := sensors.FormatTime(now.Add(-2 * time.Second))
	num := func(v float64, unit string) ReadingStatus {
		return ReadingStatus{Value: v, Unit: unit, Quality: "good", TS: ts}
	}
	acked := now.Add(-time.Minute)
	st := Status{
		Site: "dc1", Node: "rack12", Version: "2026.11.1", UptimeS: 93784,
		Devices: []DeviceStatus{
			{ID: "ups1", Driver: "megatec", State: "ok", Description: "APC Smart-UPS 1500", LastSeen: ts, Readings: map[string]ReadingStatus{
				"ups.status": {Value: "OB LB", Quality: "good"}, "battery.charge": num(18, "%"), "battery.runtime": num(250, "s"), "ups.load": num(41, "%"), "input.voltage": num(0, "V")}},
			{ID: "ups2", Driver: "upsmib", State: "stale", Error: "timeout", Readings: map[string]ReadingStatus{}},
			{ID: "inlet-a", Driver: "sht3x", State: "ok", Readings: map[string]ReadingStatus{"temperature": num(28.1, "°C"), "humidity": num(40, "%RH")}},
			{ID: "inlet-b", Driver: "bme280", State: "ok", Readings: map[string]ReadingStatus{"temperature": {Value: 33.0, Unit: "°C", Quality: "stale", TS: ts}}},
			{ID: "door", Driver: "contact", State: "ok", Readings: map[string]ReadingStatus{"contact": num(1, "")}},
			{ID: "leak", Driver: "contact", State: "error", Error: "gpio: busy", Readings: map[string]ReadingStatus{}},
			{ID: "genset", Driver: "relay", State: "ok", Readings: map[string]ReadingStatus{"relay": num(1, "")}},
			{ID: "crac2", Driver: "relay", State: "ok", Readings: map[string]ReadingStatus{"relay": num(0, "")}},
			{ID: "pdu-a", Driver: "snmp", State: "ok", Readings: map[string]ReadingStatus{"outlet1": num(3, "A"), "name": {Value: "PDU <A> & 'B'", Quality: "good"}}},
			{ID: "feed-a", Driver: "ina219", State: "ok", Readings: map[string]ReadingStatus{"voltage": num(229.8, "V"), "current": num(1.25, "A")}},
			{ID: "feed-b", Driver: "ina219", State: "error", Readings: map[string]ReadingStatus{}},
			{ID: "gen1", Driver: "modbus", Class: "other", State: "ok", Readings: map[string]ReadingStatus{"engine.state": {Value: "running", Quality: "good"}}},
		},
		Incidents: []incident.Incident{
			{ID: "01HX/door open?", Rule: "door-open", Device: "door", Metric: "contact", Severity: "warning", State: "open", OpenedAt: now.Add(-10 * time.Minute), Summary: "door is open"},
			{ID: "b", Rule: "ups1-on-battery", Device: "ups1", Severity: "critical", State: "acknowledged", OpenedAt: now.Add(-2 * time.Minute), Summary: "ups1 on battery", AckedBy: "ann", AckedAt: &acked, Flaps: 3},
			{ID: "c", Rule: "inlet-hot", Device: "inlet-b", Metric: "temperature", Severity: "critical", State: "open", OpenedAt: now.Add(-30 * time.Hour), Summary: "33 °C > 32 °C", Sent: map[string]string{"ops": "delivered", "mail": "queued"}},
		},
		Uplink: Uplink{Broker: "tls://mqtt.example:8883", Queued: 1200, Dropped: 7, LastError: "dial tcp: i/o timeout"},
		Relays: []Relay{{ID: "genset", On: true, Mode: "auto", ChangedBy: "policy:power", Changed: ts, Engine: "running · 230 V"}, {ID: "crac2", Mode: "off", ChangedBy: "ann", Why: "maintenance"}},
		Failover: Failover{
			Power:   &PolicyState{State: "on_battery", Since: ts, Reason: "ups1 OB", Relay: "genset", Devices: []string{"ups1", "ups2"}, Decisions: []Decision{{TS: ts, Action: "start generator", Reason: "mains lost"}, {TS: ts, Action: "wait"}}},
			Cooling: &PolicyState{State: "normal", Relay: "crac2", Devices: []string{"inlet-a", "inlet-b"}, Metric: "temperature", OnAbove: f(30), OffBelow: f(27)},
		},
		NUT: NUTStatus{Listen: "0.0.0.0:3493", Clients: []string{"10.0.0.5", "10.0.0.6"}},
		Rules: []RuleView{
			{Name: "inlet-a-temp", Device: "inlet-a", Metric: "temperature", WarnAbove: f(27), CritAbove: f(32)},
			{Name: "inlet-b-temp", Device: "inlet-b", Metric: "temperature", WarnAbove: f(27), CritAbove: f(32)},
			{Name: "door-open", Device: "door", Metric: "contact", Equals: 1.0, Severity: "warning"},
		},
		Firmware: update.Firmware{Version: "2026.11.1", Slot: "B", Updates: "ab", LastUpdate: &update.LastUpdate{Version: "2026.11.1", From: "2026.10.2", Outcome: "trial", At: ts}},
	}
	quiet := Status{Site: "lab", Node: "r1", Version: "dev", Uplink: Uplink{Connected: true, Broker: "tcp://127.0.0.1:1883"},
		Devices:  []DeviceStatus{{ID: "ups1", Driver: "upsmib", State: "ok", Readings: map[string]ReadingStatus{"ups.status": {Value: "OL CHRG", Quality: "good"}, "battery.charge": num(100, "%")}}},
		Firmware: update.Firmware{Version: "1.2.3", Committed: true, Updates: "apt"}}
	return map[string]Status{"rack": st, "quiet": quiet}
}

func realisticHistory(st Status, now time.Time) *state.Store {
	store := state.New(24 * time.Hour)
	for i, d := range st.Devices {
		store.AddDevice(d.ID, d.Driver)
		for m, r := range d.Readings {
			if v, ok := r.Value.(float64); ok {
				for k := 0; k < 120; k += 1 + i%3 {
					store.Push(d.ID, []sensors.Reading{sensors.Num(d.ID, m, v+float64(k%7)/10, r.Unit, now.Add(-time.Duration(120-k)*30*time.Second))})
				}
			}
		}
	}
	return store
}

// TestRenderMatchesTemplate: the page, its live part and the login page are byte for byte
// what the html/template templates in testdata write, escaping included.
func TestRenderMatchesTemplate(t *testing.T) {
	tmpl := refTemplates(t)
	for name, d := range renderCases() {
		for _, live := range []bool{false, true} {
			var want, got bytes.Buffer
			tn := "index.html"
			if live {
				tn = "live"
			}
			if err := tmpl.ExecuteTemplate(&want, tn, d); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := renderPage(&got, d, live); err != nil {
				t.Fatal(err)
			}
			if i := diffAt(got.String(), want.String()); i >= 0 {
				t.Errorf("%s (live %v): differs from the template at byte %d:\n got %q\nwant %q", name, live, i, around(got.String(), i), around(want.String(), i))
			}
		}
	}
	for _, d := range []loginData{
		{Site: "s" + nasty, Node: "n" + nasty, Next: "/x?a=1&b" + nasty, CSRF: "c" + nasty, Error: "bad" + nasty, NoUsers: true, Nonce: "n" + nasty},
		{Site: "dc1", Node: "rack12", Next: "/", CSRF: "tok", Error: "Wrong user or password.", Nonce: "abc"},
		{},
	} {
		var want, got bytes.Buffer
		if err := tmpl.ExecuteTemplate(&want, "login", d); err != nil {
			t.Fatal(err)
		}
		if err := renderLogin(&got, d); err != nil {
			t.Fatal(err)
		}
		if i := diffAt(got.String(), want.String()); i >= 0 {
			t.Errorf("login %+v differs at byte %d:\n got %q\nwant %q", d, i, around(got.String(), i), around(want.String(), i))
		}
	}
}

// diffAt is the first byte where a and b differ, -1 if they are equal.
func diffAt(a, b string) int {
	if a == b {
		return -1
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func around(s string, i int) string {
	return s[max(0, i-80):min(len(s), i+80)]
}

// FuzzRenderMatchesTemplate puts any string into the fields of every escaping context (text,
// attributes, the form actions' URL paths, the login form) and compares with the templates.
func FuzzRenderMatchesTemplate(f *testing.F) {
	for _, s := range []string{nasty, urlNasty, "%", "%4", "%41", "%%41", "\xe2\x82", "\u2028\u2029", "a\tb\rc", "javascript:alert(1)", ""} {
		f.Add(s)
	}
	tmpl := refTemplates(f)
	base := renderCases()["full"]
	f.Fuzz(func(t *testing.T, s string) {
		d := base
		d.St.Site, d.User, d.CSRF, d.Nonce = s, s, s, s
		d.Incidents = []incidentView{{Incident: incident.Incident{ID: s, Rule: s, Severity: incident.Severity(s), State: s, Summary: s}, Sent: s}}
		d.Relays = []relayView{{Relay: Relay{ID: s, Mode: s, Engine: s}, Role: s}}
		d.Charts = []chartGroup{{Device: s, Charts: []chartView{{Device: s, Metric: s, TH: s, Path: s, DotX: s, DotY: s, Lines: []chartLine{{Y: s, Level: s, Label: s}}}}}}
		var want, got bytes.Buffer
		if err := tmpl.ExecuteTemplate(&want, "index.html", d); err != nil {
			t.Fatal(err)
		}
		if err := renderPage(&got, d, false); err != nil {
			t.Fatal(err)
		}
		if i := diffAt(got.String(), want.String()); i >= 0 {
			t.Fatalf("page differs at byte %d:\n got %q\nwant %q", i, around(got.String(), i), around(want.String(), i))
		}
		l := loginData{Site: s, Node: s, Next: s, CSRF: s, Error: s, Nonce: s}
		want.Reset()
		got.Reset()
		if err := tmpl.ExecuteTemplate(&want, "login", l); err != nil {
			t.Fatal(err)
		}
		if err := renderLogin(&got, l); err != nil {
			t.Fatal(err)
		}
		if i := diffAt(got.String(), want.String()); i >= 0 {
			t.Fatalf("login differs at byte %d:\n got %q\nwant %q", i, around(got.String(), i), around(want.String(), i))
		}
	})
}
