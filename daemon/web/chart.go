package web

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/rackwatch/rackwatch/daemon/state"
)

// History charts are inline SVG: no script library, no external assets, readable without JS.
// The server draws the first view; the page's script redraws them from /api/v1/history with
// the same geometry (chartW × chartH, the same padding and gap rule), see assets/page.js.

const (
	chartW   = 300
	chartH   = 100
	chartTop = 12         // room for the max label
	chartBot = 88         // room for the min label
	plotW    = chartW - 4 // room for the newest point's dot
)

type chartGroup struct {
	Device string
	Charts []chartView
}

type chartView struct {
	Device, Metric, Unit string
	Path                 string
	Lines                []chartLine
	YMax, YMin           string
	DotX, DotY           string // the newest point, so a young history is still visible
	Last                 string
	Empty                bool
	TH                   string // thresholds as JSON for the script
}

// plot is a drawn chart.
type plot struct {
	Path       string
	Lines      []chartLine
	YMin, YMax float64
	DotX, DotY string
	OK         bool
}

type chartLine struct {
	Y     string
	Level string
	Label string
}

// gapFor is the longest step drawn as a line; a longer one is a hole in the data (a device
// that did not answer) and is left blank rather than bridged.
func gapFor(span time.Duration) time.Duration { return max(span/48, 150*time.Second) }

// drawChart lays points out over [now-span, now]. Values are averaged per pixel column so a
// 24 h chart stays small.
func drawChart(pts []state.Point, ths []threshold, now time.Time, span time.Duration) plot {
	start := now.Add(-span)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		lo, hi = math.Min(lo, p.Value), math.Max(hi, p.Value)
	}
	if len(pts) == 0 {
		return plot{}
	}
	for _, t := range ths {
		// A threshold far from the data would squash the line flat; show it only when it is
		// within reach (half the data's range again, or 20 % of its value).
		reach := math.Max((hi-lo)/2, math.Abs(hi)*0.2)
		if t.V >= lo-reach && t.V <= hi+reach {
			lo, hi = math.Min(lo, t.V), math.Max(hi, t.V)
		}
	}
	if lo >= 0 && hi <= 1 {
		lo, hi = 0, 1 // a contact or relay: off and on
	}
	// A steady value must look steady: float32 rounding in the history (23.39999 next to
	// 23.4) must not fill the chart as if it were a jump.
	if minSpan := math.Max(math.Abs(hi+lo)/2*0.02, 1); hi-lo < minSpan {
		mid := (hi + lo) / 2
		lo, hi = mid-minSpan/2, mid+minSpan/2
	}
	pad := (hi - lo) * 0.08
	lo, hi = lo-pad, hi+pad
	y := func(v float64) float64 { return chartBot - (v-lo)/(hi-lo)*(chartBot-chartTop) }
	x := func(t time.Time) float64 { return float64(t.Sub(start)) / float64(span) * plotW }

	var b strings.Builder
	gap := gapFor(span)
	var prev time.Time
	col, n, sum := -1, 0, 0.0
	var colT time.Time
	flush := func(move bool) {
		if n == 0 {
			return
		}
		cmd := "L"
		if move || b.Len() == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&b, "%s%.1f %.1f", cmd, x(colT), y(sum/float64(n)))
		n, sum = 0, 0
	}
	move := true
	for _, p := range pts {
		if p.TS.Before(start) {
			continue
		}
		c := int(x(p.TS)) / 2
		if !prev.IsZero() && p.TS.Sub(prev) > gap {
			flush(move)
			move = true
		} else if c != col {
			flush(move)
			move = false
		}
		if n == 0 {
			colT = p.TS
		}
		col = c
		n++
		sum += p.Value
		prev = p.TS
	}
	flush(move)
	p := plot{Path: b.String(), YMin: lo + pad, YMax: hi - pad, OK: b.Len() > 0}
	for _, t := range ths {
		if t.V < lo || t.V > hi {
			continue
		}
		p.Lines = append(p.Lines, chartLine{Y: fmt.Sprintf("%.1f", y(t.V)), Level: t.Level, Label: t.Label})
	}
	if last := pts[len(pts)-1]; p.OK && !last.TS.Before(start) {
		p.DotX, p.DotY = fmt.Sprintf("%.1f", x(last.TS)), fmt.Sprintf("%.1f", y(last.Value))
	}
	return p
}

func (s *Server) charts(st Status, now time.Time, span time.Duration) []chartGroup {
	return charts(st, now, span, s.b.History)
}

// charts draws a chart for every numeric metric of every device.
func charts(st Status, now time.Time, span time.Duration, history func(device, metric string, since time.Time) []state.Point) []chartGroup {
	var out []chartGroup
	for _, d := range sortedDevices(st.Devices) {
		g := chartGroup{Device: d.ID}
		for _, m := range sortedMetrics(d) {
			r := d.Readings[m]
			if _, isText := r.Value.(string); isText {
				continue
			}
			ths := thresholds(st, d.ID, m)
			c := chartView{Device: d.ID, Metric: m, Unit: r.Unit, Last: fmtValue(r)}
			thJSON := make([]map[string]any, 0, len(ths))
			for _, t := range ths {
				thJSON = append(thJSON, map[string]any{"v": t.V, "l": t.Level, "t": t.Label})
			}
			bs, _ := json.Marshal(thJSON)
			c.TH = string(bs)
			p := drawChart(history(d.ID, m, now.Add(-span)), ths, now, span)
			c.Path, c.Lines, c.Empty, c.DotX, c.DotY = p.Path, p.Lines, !p.OK, p.DotX, p.DotY
			if p.OK {
				c.YMin, c.YMax = fmtNum(p.YMin), fmtNum(p.YMax)
			}
			g.Charts = append(g.Charts, c)
		}
		if len(g.Charts) > 0 {
			out = append(out, g)
		}
	}
	return out
}

func sortedDevices(ds []DeviceStatus) []DeviceStatus {
	out := append([]DeviceStatus(nil), ds...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].ID < out[j-1].ID; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
