package web

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/state"
	_ "github.com/rackwatch/rackwatch/sensors/all" // the page sorts devices by their driver's class
)

func TestUPSWords(t *testing.T) {
	for _, tc := range []struct {
		status, words, level string
	}{
		{"OL", "On mains", lvlOK},
		{"OL CHRG", "On mains · Charging", lvlOK},
		{"OB DISCHRG", "On battery · Discharging", lvlWarn},
		{"OB LB", "On battery · Low battery", lvlCrit},
		{"OB LB FSD", "On battery · Low battery · Forced shutdown", lvlCrit},
		{"OL FSD", "On mains · Forced shutdown", lvlCrit},
		{"OL BOOST", "On mains · Boosting low input voltage", lvlOK},
		{"OL TRIM", "On mains · Trimming high input voltage", lvlOK},
		{"OL BYPASS", "On mains · On bypass", lvlWarn},
		{"ALARM OL RB", "On mains · Alarm · Replace battery", lvlWarn},
		{"OL OVER", "On mains · Overloaded", lvlCrit},
		{"OFF", "Output off", lvlCrit},
		{"WAIT", "Waiting for data", lvlWarn},
		{"", "Unknown", lvlWarn},
		{"OL XYZ", "On mains · XYZ", lvlOK},
	} {
		w, l := upsWords(tc.status)
		if w != tc.words || l != tc.level {
			t.Errorf("upsWords(%q) = %q, %s; want %q, %s", tc.status, w, l, tc.words, tc.level)
		}
	}
}

func TestFmt(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{23.4, "23.4"}, {23, "23"}, {1425, "1425"}, {229.84, "229.8"}, {0.125, "0.13"}, {-1.5, "-1.5"}, {12345.6, "12346"}} {
		if got := fmtNum(tc.v); got != tc.want {
			t.Errorf("fmtNum(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{-time.Second, "0 s"}, {45 * time.Second, "45 s"}, {12 * time.Minute, "12 min"}, {3*time.Hour + 5*time.Minute, "3 h 05 min"}, {52 * time.Hour, "2 d 4 h"}} {
		if got := fmtDur(tc.d); got != tc.want {
			t.Errorf("fmtDur(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func f(v float64) *float64 { return &v }

// TestBuild: the page's reading of a status, section by section.
func TestBuild(t *testing.T) {
	now := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	ts := "2026-11-25T02:59:58.000Z"
	num := func(v float64, unit string) ReadingStatus {
		return ReadingStatus{Value: v, Unit: unit, Quality: "good", TS: ts}
	}
	st := Status{
		Site: "dc1", Node: "rack12",
		Devices: []DeviceStatus{
			{ID: "ups1", Driver: "megatec", State: "ok", Readings: map[string]ReadingStatus{
				"ups.status": {Value: "OB LB", Quality: "good"}, "battery.charge": num(18, "%"), "battery.runtime": num(250, "s"), "ups.load": num(41, "%")}},
			{ID: "ups2", Driver: "upsmib", State: "stale", Error: "timeout", Readings: map[string]ReadingStatus{}},
			{ID: "inlet-a", Driver: "sht3x", State: "ok", Readings: map[string]ReadingStatus{"temperature": num(28.1, "°C"), "humidity": num(40, "%RH")}},
			{ID: "inlet-b", Driver: "bme280", State: "ok", Readings: map[string]ReadingStatus{"temperature": num(33, "°C")}},
			{ID: "door", Driver: "contact", State: "ok", Readings: map[string]ReadingStatus{"contact": num(1, "")}},
			{ID: "genset", Driver: "relay", State: "ok", Readings: map[string]ReadingStatus{"relay": num(1, "")}},
			{ID: "pdu-a", Driver: "snmp", State: "ok", Readings: map[string]ReadingStatus{"outlet1": num(3, "A")}},
			{ID: "feed-a", Driver: "ina219", State: "error", Readings: map[string]ReadingStatus{}},
		},
		Incidents: []incident.Incident{
			{ID: "a", Rule: "door-open", Device: "door", Severity: "warning", State: "open", OpenedAt: now.Add(-10 * time.Minute)},
			{ID: "b", Rule: "ups1-on-battery", Device: "ups1", Severity: "critical", State: "open", OpenedAt: now.Add(-2 * time.Minute), Summary: "ups1 on battery"},
		},
		Relays:   []Relay{{ID: "genset", On: true, Mode: "auto", ChangedBy: "policy:power", Changed: ts}},
		Failover: Failover{Power: &PolicyState{State: "shutdown", Since: ts, Relay: "genset", Devices: []string{"ups1"}, Decisions: []Decision{{TS: ts, Action: "first"}, {TS: ts, Action: "second"}}}},
		Rules: []RuleView{
			{Name: "inlet-a-temp", Device: "inlet-a", Metric: "temperature", WarnAbove: f(27), CritAbove: f(32)},
			{Name: "inlet-b-temp", Device: "inlet-b", Metric: "temperature", WarnAbove: f(27), CritAbove: f(32)},
			{Name: "door-open", Device: "door", Metric: "contact", Equals: 1.0, Severity: "warning"},
		},
	}
	p := build(st, now)
	if p.Banner.Level != lvlCrit || p.Banner.Title != "CRITICAL" {
		t.Errorf("banner %s %s", p.Banner.Level, p.Banner.Title)
	}
	if !strings.Contains(strings.Join(p.Banner.Reasons, "\n"), "ups1: On battery · Low battery, 4 min left") {
		t.Errorf("banner reasons %q lack the UPS's runtime", p.Banner.Reasons)
	}
	if len(p.UPS) != 2 || p.UPS[0].ID != "ups1" || p.UPS[0].Runtime != "4 min" || p.UPS[0].Charge != "18 %" || p.UPS[0].Level != lvlCrit {
		t.Errorf("UPS views %+v", p.UPS)
	}
	if p.UPS[1].ID != "ups2" || p.UPS[1].Words != "No data" || p.UPS[1].Level != lvlWarn {
		t.Errorf("a UPS without readings: %+v", p.UPS[1])
	}
	if p.Mains.Level != lvlWarn || !strings.Contains(p.Mains.Text, "ups1") {
		t.Errorf("mains %+v", p.Mains)
	}
	lv := map[string]string{}
	for _, r := range p.Sensors {
		lv[r.Device+"/"+r.Metric] = r.Level + " " + r.Thresholds
	}
	if lv["inlet-a/temperature"] != "warning warn > 27, crit > 32" || lv["inlet-b/temperature"] != "critical warn > 27, crit > 32" || lv["inlet-a/humidity"] != "ok " {
		t.Errorf("sensor levels %v", lv)
	}
	// Without the rules, an open incident on the metric still colours it.
	noRules := st
	noRules.Rules = nil
	noRules.Incidents = append(noRules.Incidents, incident.Incident{ID: "c", Rule: "x", Device: "inlet-b", Metric: "temperature", Severity: "critical", OpenedAt: now})
	for _, r := range build(noRules, now).Sensors {
		if want := map[bool]string{true: lvlCrit, false: lvlOK}[r.Device == "inlet-b"]; r.Level != want {
			t.Errorf("without rules %s/%s is %s, want %s", r.Device, r.Metric, r.Level, want)
		}
	}
	if len(p.Contacts) != 1 || p.Contacts[0].Text != "Active" || p.Contacts[0].Level != lvlWarn {
		t.Errorf("contacts %+v", p.Contacts)
	}
	if len(p.Relays) != 1 || p.Relays[0].Role != "generator" || p.Relays[0].ChangedBy != "policy:power" || p.Relays[0].Changed != "02:59:58 UTC" {
		t.Errorf("relays %+v", p.Relays)
	}
	if len(p.Feeds) != 1 || len(p.Others) != 1 || p.Others[0].ID != "pdu-a" {
		t.Errorf("feeds %+v others %+v", p.Feeds, p.Others)
	}
	if len(p.Incidents) != 2 || p.Incidents[0].ID != "b" || p.Incidents[1].For != "10 min" {
		t.Errorf("incidents not newest first: %+v", p.Incidents)
	}
	st.Failover.Cooling = &PolicyState{State: "normal", Relay: "crac2", Devices: []string{"inlet-a", "inlet-b"}, OnAbove: f(28), OffBelow: f(26)}
	if th := thresholds(st, "inlet-a", "temperature"); len(th) != 4 || th[2].Label != "backup on > 28" || th[3].Label != "off < 26" {
		t.Errorf("inlet-a thresholds %+v", th)
	}
	if th := thresholds(st, "inlet-a", "humidity"); len(th) != 0 {
		t.Errorf("inlet-a humidity thresholds %+v", th)
	}
	if c := build(st, now).Cooling; c == nil || c.Switch != "backup on above 28, off below 26" {
		t.Errorf("cooling policy view %+v", c)
	}
	if p.Power == nil || p.Power.Level != lvlCrit || p.Power.RelayOn == nil || !*p.Power.RelayOn || p.Power.Decisions[0].Action != "second" {
		t.Errorf("power policy %+v", p.Power)
	}
	if b := build(Status{Relays: []Relay{{ID: "crac2", Mode: "off", ChangedBy: "ann"}}}, now); b.Banner.Level != lvlWarn ||
		!strings.Contains(strings.Join(b.Banner.Reasons, "\n"), "relay crac2 forced off by ann") {
		t.Errorf("an override is not in the banner: %q", b.Banner.Reasons)
	}
	if len(p.Devices) != len(st.Devices) {
		t.Errorf("%d devices in the table, want %d", len(p.Devices), len(st.Devices))
	}
	// An all-quiet rack says so.
	q := build(Status{Devices: []DeviceStatus{{ID: "ups1", State: "ok", Readings: map[string]ReadingStatus{"ups.status": {Value: "OL", Quality: "good"}}}}}, now)
	if q.Banner.Level != lvlOK || q.Mains.Text != "Present" {
		t.Errorf("quiet rack: %+v %+v", q.Banner, q.Mains)
	}
}

func TestBannerOrder(t *testing.T) {
	b := mkBanner([]reason{{lvlWarn, "w", false}, {lvlCrit, "acked", true}, {lvlCrit, "new", false}, {lvlWarn, "w2", false},
		{lvlWarn, "w3", false}, {lvlWarn, "w4", false}})
	want := []string{"new", "acked", "w", "w2", "w3", "… and 1 more"}
	if strings.Join(b.Reasons, "|") != strings.Join(want, "|") {
		t.Errorf("reasons %q, want %q", b.Reasons, want)
	}
}

func TestDrawChart(t *testing.T) {
	now := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	pts := func(vals ...float64) []state.Point {
		var out []state.Point
		for i, v := range vals {
			out = append(out, state.Point{TS: now.Add(time.Duration(i-len(vals)+1) * time.Minute), Value: v})
		}
		return out
	}
	ths := []threshold{{27, lvlWarn, "warn > 27"}, {32, lvlCrit, "crit > 32"}, {500, lvlCrit, "far away"}}
	p := drawChart(pts(24, 25, 26, 28), ths, now, time.Hour)
	if !p.OK || strings.Count(p.Path, "M") != 1 || strings.Count(p.Path, "L") != 3 {
		t.Errorf("path %q", p.Path)
	}
	if len(p.Lines) != 2 || p.Lines[0].Level != lvlWarn || p.Lines[1].Label != "crit > 32" {
		t.Errorf("threshold lines %+v (the far one must be left out)", p.Lines)
	}
	if p.YMin != 24 || p.YMax != 32 {
		t.Errorf("range %v..%v, want 24..32", p.YMin, p.YMax)
	}
	if p.DotX != "296.0" {
		t.Errorf("newest point at x=%s, want 296.0", p.DotX)
	}
	// A hole of 10 minutes (a device that did not answer) is not bridged.
	gap := append(pts(1, 2), state.Point{TS: now.Add(10 * time.Minute), Value: 3}, state.Point{TS: now.Add(11 * time.Minute), Value: 3})
	p = drawChart(gap, nil, now.Add(11*time.Minute), time.Hour)
	if strings.Count(p.Path, "M") != 2 {
		t.Errorf("gap bridged: %q", p.Path)
	}
	// Points older than the span are not drawn; no points: no chart.
	if p := drawChart(pts(1), nil, now.Add(2*time.Hour), time.Hour); p.OK {
		t.Errorf("an old point drawn: %+v", p)
	}
	if p := drawChart(nil, ths, now, time.Hour); p.OK {
		t.Error("an empty history drawn")
	}
	// A flat line still has a range.
	if p := drawChart(pts(5, 5, 5), nil, now, time.Hour); p.YMin != 4.5 || p.YMax != 5.5 {
		t.Errorf("flat line range %v..%v, want 4.5..5.5", p.YMin, p.YMax)
	}
	// float32 noise in the history is not a jump: the line stays in the middle.
	if p := drawChart(pts(23.399999618530273, 23.4), nil, now, time.Hour); p.YMax-p.YMin < 0.9 {
		t.Errorf("float32 noise fills the chart: %v..%v", p.YMin, p.YMax)
	}
	if p := drawChart(pts(0, 0), nil, now, time.Hour); p.YMin != 0 || p.YMax != 1 {
		t.Errorf("contact range %v..%v, want 0..1", p.YMin, p.YMax)
	}
	// 24 h of points every 2 s fold into at most one point per pixel column.
	var many []state.Point
	for i := 0; i < 43200; i++ {
		many = append(many, state.Point{TS: now.Add(-24*time.Hour + time.Duration(i)*2*time.Second), Value: float64(i % 100)})
	}
	if p := drawChart(many, nil, now, 24*time.Hour); strings.Count(p.Path, "L")+strings.Count(p.Path, "M") > chartW+1 {
		t.Errorf("%d path points for %d px", strings.Count(p.Path, "L"), chartW)
	}
}

func TestSessions(t *testing.T) {
	now := time.Unix(1e9, 0)
	ss := newSessions(func() time.Time { return now })
	a, b := ss.create("ann"), ss.create("bob")
	if a.id == b.id || a.csrf == b.csrf || a.id == a.csrf || len(a.id) < 40 {
		t.Fatalf("weak or shared tokens: %+v %+v", a, b)
	}
	if s, ok := ss.get(a.id); !ok || s.user != "ann" {
		t.Fatal("session not found")
	}
	ss.drop(a.id)
	if _, ok := ss.get(a.id); ok {
		t.Fatal("dropped session still valid")
	}
	now = now.Add(sessionTTL)
	if _, ok := ss.get(b.id); ok {
		t.Fatal("expired session still valid")
	}
	for i := 0; i < maxSessions+5; i++ {
		ss.create("x")
	}
	if len(ss.m) > maxSessions {
		t.Fatalf("%d sessions kept", len(ss.m))
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/": "/", "/?range=24h": "/?range=24h", "//evil.example/": "/", "https://evil.example": "/",
		"/\\evil.example": "/", "javascript:alert(1)": "/", "/x\r\nSet-Cookie: a=b": "/",
		"/\t/evil.example/": "/", "/%09/evil.example/": "/", "%2F%2Fevil": "/", "/%2F%2Fevil": "/", "/%5Cevil": "/",
		"/%252F%252Fevil": "/", "/%zz": "/", "/%ff": "/", "/\u0085x": "/", "/api/v1/status": "/api/v1/status",
		"/caf%C3%A9?x=1#top": "/caf%C3%A9?x=1#top", "/a%20b": "/a%20b",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseUsers(t *testing.T) {
	good := "# operators\n\nann:$2a$04$0vXy3BzJ8cC4mH1JwqL5JOb1x7b6oUeF7VbQbR6iX0G7i0m7dZ7bC\n"
	for _, tc := range []struct {
		in   string
		ok   bool
		line string
	}{
		{good, true, ""},
		{"ann\n", false, ":1:"},
		{"# c\nann:plain\n", false, ":2:"},
		{":$2a$04$x\n", false, ":1:"},
		{"ann:$2a$04$short\n", false, "not a bcrypt hash"},
	} {
		u, err := ParseUsers("users", strings.NewReader(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("ParseUsers(%q): %v", tc.in, err)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.line) {
			t.Errorf("ParseUsers(%q): %v, want %q in it", tc.in, err, tc.line)
		}
		if err == nil && u.Len() != 1 {
			t.Errorf("ParseUsers(%q): %d users", tc.in, u.Len())
		}
	}
}

// FuzzParseUsers: the users file is read at start and on reload; whatever is in it, the
// parser answers with users or an error, never a panic, and never a user without a hash.
func FuzzParseUsers(f *testing.F) {
	f.Add("ann:$2a$04$0vXy3BzJ8cC4mH1JwqL5JOb1x7b6oUeF7VbQbR6iX0G7i0m7dZ7bC\n")
	f.Add("# x\n\n:::\n")
	f.Add("a:$2\x00\n")
	f.Add(strings.Repeat("x", 70000))
	f.Fuzz(func(t *testing.T, in string) {
		u, err := ParseUsers("fuzz", bytes.NewReader([]byte(in)))
		if err != nil {
			return
		}
		for name, h := range u.hashes {
			if name == "" || !bytes.HasPrefix(h, []byte("$2")) {
				t.Fatalf("user %q with hash %q", name, h)
			}
		}
	})
}

// TestUsersCheck: hashes from Go's bcrypt and from Apache's htpasswd -B ($2y$) both work.
func TestUsersCheck(t *testing.T) {
	h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(h), "$2a$", "$2y$", 1)
	u, err := ParseUsers("users", strings.NewReader("go:"+string(h)+"\nhtpasswd:"+y+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pass string
		ok         bool
	}{{"go", "s3cret", true}, {"htpasswd", "s3cret", true}, {"go", "S3cret", false}, {"nobody", "s3cret", false}, {"go", "", false}} {
		if got := u.Check(tc.user, tc.pass); got != tc.ok {
			t.Errorf("Check(%q, %q) = %v", tc.user, tc.pass, got)
		}
	}
	var none *Users
	if none.Check("go", "s3cret") || none.Has("go") {
		t.Error("no users file lets someone in")
	}
}

func TestSentLine(t *testing.T) {
	if got := sentLine(map[string]string{"oncall": "queued", "nms": "delivered", "mail": "dropped"}); got != "mail dropped · nms ✔ · oncall waiting" {
		t.Errorf("sentLine: %q", got)
	}
	if got := sentLine(nil); got != "" {
		t.Errorf("sentLine(nil): %q", got)
	}
}
