package web_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/sensors"
	"github.com/rackwatch/rackwatch/sensors/sim"
)

// The browser test drives Debian's Chromium, headless, against an in-process site whose
// uplink publishes to a real mosquitto: what the on-call operator does at 3 a.m., end to end.

// screenshotDir is the git-ignored screenshots/ folder at the repository root.
var screenshotDir = filepath.Join("..", "..", "screenshots")

type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	bin := testpeer.Require(t, "chromium", "chromium")
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		// This network is closed: Chromium must not try to reach Google on its own.
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	// The first Run starts the browser; it must not carry a timeout (see chromedp.Run).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// do runs actions with a deadline.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](b *browser, expr string, opts ...chromedp.EvaluateOption) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript condition in the page.
func (b *browser) wait(within time.Duration, what, expr string) {
	b.t.Helper()
	testpeer.Eventually(b.t, within, what, func() bool {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	})
}

func (b *browser) shoot(name string, full bool) {
	b.t.Helper()
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	act := chromedp.CaptureScreenshot()
	if full {
		act = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(ctx, act)
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(screenshotDir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", path)
}

func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return err
	})
}

// screenshots writes the page at desktop (1280×800) and phone (390×844) width, light and
// dark, for a person to review.
func (b *browser) screenshots(prefix string) {
	b.t.Helper()
	for _, v := range []struct {
		name   string
		w, h   int64
		mobile bool
	}{{"desktop", 1280, 800, false}, {"console", 1024, 768, false}, {"phone", 390, 844, true}} {
		for _, scheme := range []string{"light", "dark"} {
			vp := chromedp.EmulateViewport(v.w, v.h)
			if v.mobile {
				vp = chromedp.EmulateViewport(v.w, v.h, chromedp.EmulateScale(2), chromedp.EmulateMobile)
			}
			b.do("viewport "+v.name, vp, colorScheme(scheme))
			name := fmt.Sprintf("%s-%s-%s", prefix, v.name, scheme)
			b.shoot(name, false)
			if scheme == "light" {
				b.shoot(name+"-full", true)
			}
		}
	}
	b.do("back to desktop", chromedp.EmulateViewport(1280, 800), colorScheme(""))
}

func TestBrowser(t *testing.T) {
	b := newBrowser(t)
	mq := testpeer.StartMosquitto(t)
	sub := mq.Subscribe(t, "rackwatch/#", "")
	listen := fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	yaml, ids := demoYAML(t, siteOpts{mqtt: mq.URL, listen: listen})
	s, stop := startSite(t, yaml)
	waitPolledIDs(t, s, ids)

	// The page shows every device, and its script connects to /events.
	b.do("open the page", chromedp.Navigate(s.URL), chromedp.WaitVisible(chromedp.CSS("#banner")))
	shown := eval[[]string](b, `Array.from(document.querySelectorAll("tr.dev")).map(e => e.dataset.device)`)
	for _, id := range ids {
		if !slices.Contains(shown, id) {
			t.Errorf("the page does not show device %s (it shows %v)", id, shown)
		}
	}
	b.wait(20*time.Second, "the page's event stream connected", `document.querySelector("#conn").textContent === "live"`)
	b.wait(20*time.Second, "charts drawn", `document.querySelectorAll("figure.chart path.ln").length > 10`)

	// An incident opens: it appears without a reload (a reload would lose the marker).
	eval[chromedp.Void](b, `window.noReload = 1`)
	s.Device("leak").(*sim.Device).Set("contact", sensors.Value{Num: 1})
	s.Device("ups1").(*sim.Device).Set("ups.status", sensors.Value{Text: "OB DISCHRG", IsText: true})
	s.Device("inlet-a").(*sim.Device).Set("temperature", sensors.Value{Num: 28.4})
	b.wait(20*time.Second, "the leak incident on the page without a reload",
		`window.noReload === 1 && document.querySelector("#incidents").textContent.includes("leak")`)
	b.wait(20*time.Second, "the banner turns critical", `document.querySelector("#banner").classList.contains("critical")`)
	b.wait(20*time.Second, "the UPS shows on battery", `document.querySelector("#ups-ups1").textContent.includes("On battery")`)
	in := openIncident(t, s, "leak")

	// A refresh of the live part keeps what the operator opened.
	eval[chromedp.Void](b, `document.querySelector('details[data-k="ups-ups1"]').open = true; document.querySelector("#banner").dataset.old = "1"`)
	b.wait(20*time.Second, "the live part refreshed", `!document.querySelector("#banner").dataset.old`)
	if !eval[bool](b, `document.querySelector('details[data-k="ups-ups1"]').open`) {
		t.Error("a refresh closed the UPS's readings the operator had opened")
	}

	// Log in through the form.
	b.do("log in",
		chromedp.Navigate(s.URL+"/login?next=/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="user"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="user"]`), operator),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), password),
		chromedp.Click(chromedp.CSS(`form button`)),
		chromedp.WaitVisible(chromedp.CSS("#banner")))
	if who := eval[string](b, `document.querySelector("header .who").textContent`); !strings.Contains(who, operator) {
		t.Fatalf("after login the header says %q", who)
	}
	b.wait(20*time.Second, "the event stream connected again", `document.querySelector("#conn").textContent === "live"`)

	// A POST from the browser without the CSRF token is refused, JSON or form; with the token
	// the same request passes (so it is the token that made the difference).
	for _, js := range []string{
		`fetch("/api/v1/relays/crac2", {method: "POST", headers: {"Content-Type": "application/json"}, body: '{"state":"on"}'}).then(r => r.status)`,
		`fetch("/api/v1/incidents/` + in.ID + `/ack", {method: "POST", body: new URLSearchParams({x: "1"})}).then(r => r.status)`,
		`fetch("/api/v1/relays/crac2", {method: "POST", headers: {"X-CSRF-Token": "forged", "Content-Type": "application/json"}, body: '{"state":"on"}'}).then(r => r.status)`,
	} {
		if code := eval[int](b, js, chromedp.EvalAwaitPromise); code != 403 {
			t.Errorf("%s: %d, want 403", js, code)
		}
	}
	if g, _ := s.Incidents().Get(in.ID); g.AckedBy != "" {
		t.Fatalf("acknowledged by %q after a refused POST", g.AckedBy)
	}
	code := eval[int](b, `fetch("/api/v1/relays/crac2", {method: "POST", headers: {"X-CSRF-Token": document.querySelector('meta[name=csrf]').content, "Content-Type": "application/json"}, body: '{"state":"on"}'}).then(r => r.status)`, chromedp.EvalAwaitPromise)
	if code != 200 {
		t.Errorf("relay POST with the token: %d, want 200", code)
	}
	b.wait(20*time.Second, "the relay override on the page", `document.querySelector("#relay-crac2").textContent.includes("changed by `+operator+`")`)

	// Acknowledge with the button: the page shows it (without a reload), and so does MQTT.
	eval[chromedp.Void](b, `window.noReload = 2`)
	b.do("click Acknowledge", chromedp.Click(chromedp.CSS(`.inc[data-id="`+in.ID+`"] button.ack`)))
	b.wait(20*time.Second, "the acknowledgement on the page",
		`window.noReload === 2 && document.querySelector('.inc[data-id="`+in.ID+`"]').textContent.includes("acknowledged by `+operator+`")`)
	testpeer.Eventually(t, 20*time.Second, "the acknowledgement on MQTT", func() bool {
		return len(sub.Matching("/incidents", `"event":"acknowledged"`, in.ID, `"`+operator+`"`)) > 0
	})
	b.wait(20*time.Second, "charts drawn", `document.querySelectorAll("figure.chart path.ln").length > 10`)
	b.screenshots("web")

	// The daemon restarts: the page notices, reconnects by itself, and is live again.
	eval[chromedp.Void](b, `window.noReload = 3`)
	stop()
	b.wait(20*time.Second, "the page notices the daemon is gone", `document.querySelector("#conn").textContent !== "live"`)
	s2, _ := startSite(t, yaml)
	b.wait(30*time.Second, "the page reconnects", `document.querySelector("#conn").textContent === "live"`)
	s2.Device("door").(*sim.Device).Set("contact", sensors.Value{Num: 1})
	b.wait(20*time.Second, "an incident of the restarted daemon on the page without a reload",
		`window.noReload === 3 && document.querySelector("#incidents").textContent.includes("door-open")`)

	// The login page on a phone, for review.
	b.do("login page on a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(s2.URL+"/login"), chromedp.WaitVisible(chromedp.CSS(`input[name="user"]`)))
	b.shoot("web-login-phone", false)
}
