package web

import (
	_ "embed"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/rackwatch/rackwatch/daemon/update"
	"github.com/rackwatch/rackwatch/sensors"
)

// The page is written in plain Go rather than html/template: text/template reaches fields and
// methods by name (reflect.Value.MethodByName), which makes the linker keep every exported
// method of every type reachable through an interface, in the binary and in the pages it maps
// (TestNoReflectMethod keeps it out). Every value goes through esc (or escURL inside the form
// actions' URL paths), the escaping html/template applies in these same contexts;
// TestRenderMatchesTemplate compares the output with the former templates (testdata/).

//go:embed assets/page.css
var pageCSS string

//go:embed assets/page.js
var pageJS string

//go:embed assets/login.css
var loginCSS string

// escaper is html/template's escaping for text and quoted attribute values.
var escaper = strings.NewReplacer("\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;")

// pw writes a page; the first write error is kept and later writes are skipped.
type pw struct {
	w   io.Writer
	err error
}

func (p *pw) raw(ss ...string) {
	for _, s := range ss {
		if p.err == nil {
			_, p.err = io.WriteString(p.w, s)
		}
	}
}

// esc writes a value escaped for HTML text or a quoted attribute value.
func (p *pw) esc(s string) {
	if p.err == nil {
		_, p.err = escaper.WriteString(p.w, s)
	}
}

// opt writes prefix and s, escaped, when s is not empty.
func (p *pw) opt(prefix, s string) {
	if s != "" {
		p.raw(prefix)
		p.esc(s)
	}
}

func (p *pw) num(n int) { p.raw(strconv.Itoa(n)) }

// escURL writes a value inside a URL path, as html/template's URL normaliser does: bytes
// that RFC 3986 allows there are kept, a % only when it starts a valid escape, every other
// byte is percent-encoded (lower-case hex); then the result is escaped for the attribute.
func (p *pw) escURL(s string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-._~!#$&*+,/:;=?@[]", c) >= 0:
			b.WriteByte(c)
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	p.esc(b.String())
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func or(s, dflt string) string {
	if s != "" {
		return s
	}
	return dflt
}

func renderLogin(w io.Writer, d loginData) error {
	p := &pw{w: w}
	p.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<meta name=\"color-scheme\" content=\"light dark\"><link rel=\"icon\" href=\"data:,\">\n<title>Log in · rackwatch ")
	p.esc(d.Site)
	p.raw("/")
	p.esc(d.Node)
	p.raw("</title>\n<style nonce=\"")
	p.esc(d.Nonce)
	p.raw("\">\n", loginCSS, "</style></head><body>\n<form method=\"post\" action=\"/login\"><h1>rackwatch ")
	p.esc(d.Site)
	p.raw("/")
	p.esc(d.Node)
	p.raw("</h1>\n")
	if d.Error != "" {
		p.raw(`<p class="err" role="alert">`)
		p.esc(d.Error)
		p.raw("</p>")
	}
	p.raw("\n")
	if d.NoUsers {
		p.raw("<p>Control actions are off: the config has no <code>web.users_file</code>.</p>")
	}
	p.raw("\n<input type=\"hidden\" name=\"csrf\" value=\"")
	p.esc(d.CSRF)
	p.raw("\"><input type=\"hidden\" name=\"next\" value=\"")
	p.esc(d.Next)
	p.raw("\">\n<label>User<input name=\"user\" autocomplete=\"username\" autocapitalize=\"none\" required autofocus></label>\n<label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n<button>Log in</button><p><a href=\"/\">Back to the status page</a></p></form>\n</body></html>")
	return p.err
}

// renderPage writes the whole page, or with live only the part the script re-fetches.
func renderPage(w io.Writer, d pageData, live bool) error {
	p := &pw{w: w}
	if live {
		p.live(d)
		return p.err
	}
	p.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n<meta name=\"color-scheme\" content=\"light dark\">\n")
	if d.CSRF != "" {
		p.raw(`<meta name="csrf" content="`)
		p.esc(d.CSRF)
		p.raw(`">`)
	}
	p.raw("\n<link rel=\"icon\" href=\"data:,\">\n<title>")
	p.esc(d.Banner.Title)
	p.raw(" · rackwatch ")
	p.esc(d.St.Site)
	p.raw("/")
	p.esc(d.St.Node)
	p.raw("</title>\n<style nonce=\"")
	p.esc(d.Nonce)
	p.raw("\">\n", pageCSS, "</style>\n</head><body data-range=\"")
	p.esc(d.Range)
	p.raw("\">\n<header><strong>rackwatch</strong> <span class=\"site\">")
	p.esc(d.St.Site)
	p.raw("/")
	p.esc(d.St.Node)
	p.raw("</span>\n<span id=\"conn\" class=\"conn\">static</span>\n<span class=\"who\">")
	if d.User != "" {
		p.esc(d.User)
		p.raw(` · <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="`)
		p.esc(d.CSRF)
		p.raw(`"><button class="link">Log out</button></form>`)
	} else if d.CanLogin {
		p.raw(`<a href="/login?next=/">Log in</a>`)
	}
	p.raw("</span></header>\n<main>\n<div id=\"live\">")
	p.live(d)
	p.raw("</div>\n")
	p.charts(d)
	p.raw("\n</main>\n<footer>rackwatch ")
	p.esc(d.St.Version)
	p.raw(" · up ")
	p.esc(d.Uptime)
	p.raw(` · <a href="/api/v1/status">status JSON</a> · <a href="/api/v1/incidents?state=all">incidents</a> · <a href="/api/v1/kpis">KPIs</a> · <a href="/metrics">metrics</a></footer>` + "\n<script nonce=\"")
	p.esc(d.Nonce)
	p.raw("\">\n", pageJS, "</script>\n</body></html>")
	return p.err
}

func (p *pw) live(d pageData) {
	p.raw("\n<section id=\"banner\" class=\"banner ")
	p.esc(d.Banner.Level)
	p.raw("\" role=\"status\"><div class=\"title\">")
	p.esc(d.Banner.Title)
	p.raw("</div>\n<ul>")
	for _, r := range d.Banner.Reasons {
		p.raw("<li>")
		p.esc(r)
		p.raw("</li>")
	}
	p.raw("</ul><div class=\"asof\">as of ")
	p.esc(d.Now.UTC().Format("15:04:05"))
	p.raw(" UTC</div></section>\n\n<section id=\"incidents\" class=\"card wide\"><h2>Open incidents <span class=\"count\">")
	p.num(len(d.Incidents))
	p.raw("</span></h2>\n")
	if len(d.Incidents) > 0 {
		p.raw("<div class=\"incs\">\n")
		for _, in := range d.Incidents {
			p.raw(`<div class="inc" data-id="`)
			p.esc(in.ID)
			p.raw(`"><span class="pill `)
			p.esc(string(in.Severity))
			p.raw(`">`)
			p.esc(string(in.Severity))
			p.raw("</span>\n<div class=\"what\"><b>")
			p.esc(in.Rule)
			p.raw("</b>")
			p.opt(" · ", in.Device)
			p.raw(`<div class="sub">`)
			p.esc(in.Summary)
			if in.Flaps > 0 {
				p.raw(" · flapped ")
				p.num(in.Flaps)
				p.raw("×")
			}
			p.raw("</div></div>\n<div class=\"when\">")
			p.esc(in.Opened)
			p.raw(`<div class="sub">for <span data-since="`)
			p.esc(in.OpenedTS)
			p.raw(`">`)
			p.esc(in.For)
			p.raw("</span></div></div>\n<div class=\"state\">")
			if in.Acked != "" {
				p.raw(`<span class="ok">✔</span> acknowledged by `)
				p.esc(in.Acked)
			} else {
				p.esc(in.State)
			}
			if in.Sent != "" {
				p.raw(`<div class="sub">sent: `)
				p.esc(in.Sent)
				p.raw("</div>")
			}
			p.raw("</div>\n<div class=\"do\">")
			if in.Acked == "" {
				if d.User != "" {
					p.raw(`<form method="post" action="/api/v1/incidents/`)
					p.escURL(in.ID)
					p.raw(`/ack" class="inline act"><input type="hidden" name="csrf" value="`)
					p.esc(d.CSRF)
					p.raw(`"><button class="ack">Acknowledge</button></form>`)
				} else if d.CanLogin {
					p.raw(`<a href="/login?next=/">Log in to acknowledge</a>`)
				}
			}
			p.raw("</div></div>\n")
		}
		p.raw("</div>")
	} else {
		p.raw(`<p class="none">No open incidents.</p>`)
	}
	p.raw("</section>\n\n<div class=\"grid\">\n<section id=\"power\" class=\"card\"><h2>Power</h2>\n<p class=\"row\"><span>Mains</span><b class=\"")
	p.esc(d.Mains.Level)
	p.raw(`">`)
	p.esc(d.Mains.Text)
	p.raw("</b></p>\n")
	for _, u := range d.UPS {
		p.raw(`<div class="ups `)
		p.esc(u.Level)
		p.raw(`" id="ups-`)
		p.esc(u.ID)
		p.raw(`"><h3>`)
		p.esc(u.ID)
		if u.Description != "" {
			p.raw(` <span class="sub">`)
			p.esc(u.Description)
			p.raw("</span>")
		}
		p.raw("</h3>\n<p class=\"words ")
		p.esc(u.Level)
		p.raw(`">`)
		p.esc(u.Words)
		if u.Flags != "" {
			p.raw(" <code>")
			p.esc(u.Flags)
			p.raw("</code>")
		}
		if u.State != sensors.DeviceOK {
			p.raw(` · <span class="warning">device `)
			p.esc(string(u.State))
			p.raw("</span>")
		}
		p.raw("</p>\n<div class=\"kpis\"><div><span>Charge</span><b>")
		p.esc(or(u.Charge, "—"))
		p.raw("</b>")
		if u.Charge != "" {
			p.raw(`<meter min="0" max="100" low="25" high="60" optimum="100" value="`)
			p.esc(fmt.Sprint(u.ChargePct))
			p.raw(`"></meter>`)
		}
		p.raw("</div>\n<div><span>Runtime</span><b>")
		p.esc(or(u.Runtime, "—"))
		p.raw("</b></div><div><span>Load</span><b>")
		p.esc(or(u.Load, "—"))
		p.raw("</b></div></div>\n<details data-k=\"ups-")
		p.esc(u.ID)
		p.raw(`"><summary>All readings</summary><dl>`)
		for _, e := range u.Extra {
			p.raw("<dt>")
			p.esc(e.K)
			p.raw("</dt><dd>")
			p.esc(e.V)
			p.raw("</dd>")
		}
		p.raw("</dl></details></div>\n")
	}
	if len(d.UPS) == 0 {
		p.raw(`<p class="none">No UPS configured.</p>`)
	}
	p.raw("\n")
	for _, f := range d.Feeds {
		p.raw(`<div class="feed"><span>`)
		p.esc(f.ID)
		if f.State != sensors.DeviceOK {
			p.raw(` <span class="dev-`)
			p.esc(string(f.State))
			p.raw(`">`)
			p.esc(string(f.State))
			p.raw("</span>")
		}
		p.raw("</span><span>")
		for i, r := range f.Readings {
			if i > 0 {
				p.raw(" · ")
			}
			p.raw("<b>")
			p.esc(r.V)
			p.raw("</b>")
		}
		p.raw("</span></div>")
	}
	p.raw("\n")
	if d.Power != nil {
		p.policy(*d.Power)
	}
	p.raw("\n</section>\n\n<section id=\"cooling\" class=\"card\"><h2>Cooling</h2>\n")
	if len(d.Sensors) > 0 {
		p.raw("<div class=\"scroll\"><table><thead><tr><th>Sensor</th><th>Value</th><th>Thresholds</th></tr></thead><tbody>\n")
		for _, r := range d.Sensors {
			p.raw(`<tr class="`)
			p.esc(r.Level)
			p.raw(`"><td>`)
			p.esc(r.Device)
			p.raw(` <span class="sub">`)
			p.esc(r.Metric)
			p.raw(`</span></td><td class="v `)
			p.esc(r.Level)
			p.raw(`">`)
			p.esc(r.Value)
			if r.Quality != "good" {
				p.raw(` <span class="sub">(`)
				p.esc(r.Quality)
				p.raw(")</span>")
			}
			p.raw(`</td><td class="sub">`)
			p.esc(or(r.Thresholds, "—"))
			p.raw("</td></tr>\n")
		}
		p.raw("</tbody></table></div>")
	} else {
		p.raw(`<p class="none">No temperature or humidity sensor.</p>`)
	}
	p.raw("\n")
	if d.Cooling != nil {
		p.policy(*d.Cooling)
	}
	p.raw("\n</section>\n\n<section id=\"contacts\" class=\"card\"><h2>Contacts and relays</h2>\n")
	for _, c := range d.Contacts {
		p.raw(`<p class="row contact"><span>`)
		p.esc(c.ID)
		if c.Description != "" {
			p.raw(` <span class="sub">`)
			p.esc(c.Description)
			p.raw("</span>")
		}
		p.raw(`</span><b class="`)
		p.esc(c.Level)
		p.raw(`">`)
		p.esc(c.Text)
		if c.State != sensors.DeviceOK {
			p.raw(" (")
			p.esc(string(c.State))
			p.raw(")")
		}
		p.raw("</b></p>")
	}
	p.raw("\n")
	for _, r := range d.Relays {
		p.raw(`<div class="relay" id="relay-`)
		p.esc(r.ID)
		p.raw(`"><p class="row"><span>`)
		p.esc(r.ID)
		if r.Role != "" {
			p.raw(` <span class="sub">`)
			p.esc(r.Role)
			p.raw("</span>")
		}
		if r.On {
			p.raw(`</span><b class="on">ON</b></p>`)
		} else {
			p.raw(`</span><b class="off">off</b></p>`)
		}
		p.raw("\n<p class=\"sub\">mode <b class=\"")
		p.esc(r.Level)
		p.raw(`">`)
		p.esc(r.Mode)
		p.raw("</b>")
		p.opt(" · changed by ", r.ChangedBy)
		p.opt(" at ", r.Changed)
		p.opt(" · ", r.Why)
		p.raw("</p>\n")
		if r.Engine != "" {
			p.raw(`<p class="sub engine">engine <b>`)
			p.esc(r.Engine)
			p.raw("</b></p>")
		}
		p.raw("\n")
		if d.User != "" {
			p.raw(`<form method="post" action="/api/v1/relays/`)
			p.escURL(r.ID)
			p.raw(`" class="act relayset"><input type="hidden" name="csrf" value="`)
			p.esc(d.CSRF)
			p.raw("\">\n")
			for _, m := range [...][2]string{{"on", "Force on"}, {"off", "Force off"}, {"auto", "Auto"}} {
				p.raw(`<button name="state" value="`, m[0], `"`)
				if r.Mode == m[0] {
					p.raw(" disabled")
				}
				p.raw(">", m[1], "</button>")
			}
			p.raw("</form>")
		}
		p.raw("</div>\n")
	}
	p.raw("\n")
	if len(d.Contacts) == 0 && len(d.Relays) == 0 {
		p.raw(`<p class="none">No contacts or relays.</p>`)
	}
	p.raw("\n</section>\n\n<section id=\"uplink\" class=\"card\"><h2>Uplink and NUT</h2>\n<p class=\"row\"><span>MQTT</span>")
	if d.St.Uplink.Connected {
		p.raw(`<b class="ok">connected</b>`)
	} else {
		p.raw(`<b class="warning">not connected</b>`)
	}
	p.raw("</p>\n<p class=\"row\"><span>Broker</span><span>")
	p.esc(or(d.St.Uplink.Broker, "—"))
	p.raw("</span></p>\n<p class=\"row\"><span>Queued</span><span>")
	p.num(d.St.Uplink.Queued)
	if d.St.Uplink.Dropped != 0 {
		p.raw(` · <b class="warning">`)
		p.raw(strconv.FormatUint(d.St.Uplink.Dropped, 10))
		p.raw(" dropped</b>")
	}
	p.raw("</span></p>\n")
	if d.St.Uplink.LastError != "" {
		p.raw(`<p class="sub warning">`)
		p.esc(d.St.Uplink.LastError)
		p.raw("</p>")
	}
	p.raw("\n<p class=\"row\"><span>NUT server</span><span>")
	p.esc(or(d.St.NUT.Listen, "off"))
	p.raw("</span></p>\n<p class=\"row\"><span>NUT clients</span><span>")
	if len(d.St.NUT.Clients) > 0 {
		for i, c := range d.St.NUT.Clients {
			if i > 0 {
				p.raw(", ")
			}
			p.esc(c)
		}
	} else {
		p.raw("none")
	}
	p.raw("</span></p>\n")
	p.firmware(d.St.Firmware)
	p.raw("\n</section>\n</div>\n\n")
	if len(d.Others) > 0 {
		p.raw("<section id=\"others\" class=\"card wide\"><h2>Other devices</h2>\n")
		for _, o := range d.Others {
			p.raw(`<p class="row"><span>`)
			p.esc(o.ID)
			p.raw(` <span class="sub">`)
			p.esc(o.Driver)
			p.raw("</span></span><span>")
			for _, r := range o.Readings {
				p.esc(r.K)
				p.raw(" <b>")
				p.esc(r.V)
				p.raw("</b> ")
			}
			p.raw("</span></p>")
		}
		p.raw("</section>")
	}
	p.raw("\n\n<section id=\"devices\" class=\"card wide\"><h2>Devices</h2><div class=\"scroll\"><table><thead><tr><th>Device</th><th class=\"hide-s\">Driver</th><th>State</th><th>Last seen</th><th class=\"hide-s\">Readings</th></tr></thead><tbody>\n")
	for _, v := range d.Devices {
		p.raw(`<tr class="dev" data-device="`)
		p.esc(v.ID)
		p.raw(`"><td><b>`)
		p.esc(v.ID)
		p.raw("</b>")
		if v.Description != "" {
			p.raw(`<div class="sub">`)
			p.esc(v.Description)
			p.raw("</div>")
		}
		p.raw(`</td><td class="hide-s">`)
		p.esc(v.Driver)
		p.raw(`</td><td class="dev-`)
		p.esc(string(v.State))
		p.raw(`">`)
		p.esc(string(v.State))
		if v.Error != "" {
			p.raw(`<div class="sub">`)
			p.esc(v.Error)
			p.raw("</div>")
		}
		p.raw(`</td><td class="nw">`)
		p.esc(v.LastSeen)
		p.raw("</td>\n<td class=\"sub hide-s\">")
		for i, r := range v.Readings {
			if i > 0 {
				p.raw(" · ")
			}
			p.esc(r.K)
			p.raw(" ")
			p.esc(r.V)
		}
		p.raw("</td></tr>\n")
	}
	p.raw("</tbody></table></div></section>\n")
}

func (p *pw) policy(v policyView) {
	p.raw(`<div class="policy"><p class="row"><span>`)
	p.esc(v.Name)
	p.raw(` policy</span><b class="`)
	p.esc(v.Level)
	p.raw(`">`)
	p.esc(string(v.State))
	p.raw("</b></p>\n<p class=\"sub\">")
	p.esc(v.Words)
	p.opt(" · since ", v.Since)
	p.opt(" · ", v.Reason)
	p.raw("</p>\n")
	if v.Relay != "" {
		p.raw(`<p class="row"><span>`)
		if v.Name == "power" {
			p.raw("Generator")
		} else {
			p.raw("Backup cooling")
		}
		p.raw(" relay ")
		p.esc(v.Relay)
		p.raw("</span><b>")
		switch {
		case v.RelayOn == nil:
			p.raw("—")
		case *v.RelayOn:
			p.raw("ON")
		default:
			p.raw("off")
		}
		p.raw("</b></p>")
	}
	p.raw("\n")
	if v.Devices != "" {
		p.raw(`<p class="sub">watches `)
		p.esc(v.Devices)
		p.opt(" · ", v.Switch)
		p.raw("</p>")
	}
	p.raw("\n")
	if len(v.Decisions) > 0 {
		p.raw(`<details open data-k="dec-`)
		p.esc(v.Name)
		p.raw(`"><summary>Decisions</summary><ol class="timeline">`)
		for _, x := range v.Decisions {
			p.raw("<li><time>")
			p.esc(x.TS)
			p.raw("</time> <b>")
			p.esc(x.Action)
			p.raw("</b> ")
			p.esc(x.Reason)
			p.raw("</li>")
		}
		p.raw("</ol></details>")
	}
	p.raw("</div>")
}

func (p *pw) charts(d pageData) {
	p.raw(`<section id="history" class="card wide"><h2>History <span class="range"><a href="?range=1h" data-range="1h"`)
	if d.Range == "1h" {
		p.raw(` class="sel"`)
	}
	p.raw(`>1 h</a> <a href="?range=24h" data-range="24h"`)
	if d.Range == "24h" {
		p.raw(` class="sel"`)
	}
	p.raw(">24 h</a></span></h2>\n")
	for _, g := range d.Charts {
		p.raw("<h3>")
		p.esc(g.Device)
		p.raw(`</h3><div class="charts">`)
		for _, c := range g.Charts {
			p.raw(`<figure class="chart" data-device="`)
			p.esc(c.Device)
			p.raw(`" data-metric="`)
			p.esc(c.Metric)
			p.raw(`" data-th="`)
			p.esc(c.TH)
			p.raw(`"><figcaption>`)
			p.esc(c.Metric)
			p.raw(` <span class="sub">`)
			p.esc(c.Unit)
			p.raw(`</span> <b class="last">`)
			p.esc(c.Last)
			p.raw("</b></figcaption>\n<svg viewBox=\"0 0 300 100\" role=\"img\" aria-label=\"")
			p.esc(c.Device)
			p.raw(" ")
			p.esc(c.Metric)
			p.raw(` history">`)
			if c.Empty {
				p.raw(`<text x="150" y="54" text-anchor="middle" class="ax">no data yet</text>`)
			} else {
				for _, l := range c.Lines {
					p.raw(`<line class="th `)
					p.esc(l.Level)
					p.raw(`" x1="0" x2="300" y1="`)
					p.esc(l.Y)
					p.raw(`" y2="`)
					p.esc(l.Y)
					p.raw(`"/><text class="tl `)
					p.esc(l.Level)
					p.raw(`" x="298" y="`)
					p.esc(l.Y)
					p.raw(`" dy="-2" text-anchor="end">`)
					p.esc(l.Label)
					p.raw("</text>")
				}
				p.raw(`<path class="ln" d="`)
				p.esc(c.Path)
				p.raw(`"/>`)
				if c.DotX != "" {
					p.raw(`<circle class="dot" cx="`)
					p.esc(c.DotX)
					p.raw(`" cy="`)
					p.esc(c.DotY)
					p.raw(`" r="2.5"/>`)
				}
				p.raw(`<text class="ax" x="2" y="9">`)
				p.esc(c.YMax)
				p.raw(`</text><text class="ax" x="2" y="98">`)
				p.esc(c.YMin)
				p.raw("</text>")
			}
			p.raw("</svg></figure>")
		}
		p.raw("</div>")
	}
	p.raw("\n</section>")
}

// firmware writes the running firmware and its last update; Status.Firmware is what the site's
// updater reports (an update.Firmware), anything else is not shown.
func (p *pw) firmware(v any) {
	var f *update.Firmware
	switch x := v.(type) {
	case update.Firmware:
		f = &x
	case *update.Firmware:
		f = x
	}
	if f == nil {
		return
	}
	p.raw(`<p class="row" id="firmware"><span>Firmware</span><span>`)
	p.esc(f.Version)
	p.opt(" · slot ", f.Slot)
	if !f.Committed {
		p.raw(` · <b class="warning">on trial</b>`)
	}
	if f.Updates == "apt" {
		p.raw(" · updated by apt")
	}
	p.raw("</span></p>\n")
	if l := f.LastUpdate; l != nil {
		p.raw(`<p class="row"><span>Last update</span><span>`)
		p.esc(l.Version)
		switch l.Outcome {
		case "committed", "installed", "trial":
			p.raw(` <b class="ok">`)
		default:
			p.raw(` <b class="warning">`)
		}
		p.esc(l.Outcome)
		p.raw("</b> ")
		p.esc(l.At)
		p.raw("</span></p>")
		if l.Error != "" {
			p.raw(`<p class="sub warning">`)
			p.esc(l.Error)
			p.raw("</p>")
		}
	}
}
