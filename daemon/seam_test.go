package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	"github.com/rackwatch/rackwatch/sensors"
)

// widget is a driver that exists only in this test: it proves the seam, that a driver is
// its own package plus one Register call, with nothing in config, the page, NUT or the
// policies naming it.
type widgetOptions struct {
	Colour string `yaml:"colour"`
	RPM    int    `yaml:"rpm"`
}

type widget struct {
	id string
	o  widgetOptions
}

func (w widget) Poll(context.Context) ([]sensors.Reading, error) {
	now := time.Now()
	return []sensors.Reading{sensors.Num(w.id, "spin", float64(w.o.RPM), "rpm", now), sensors.Text(w.id, "colour", w.o.Colour, now)}, nil
}

func (widget) Close() error { return nil }

func init() {
	sensors.Register(sensors.Driver{
		Name:  "seamtest.widget",
		Class: sensors.ClassEnvironmental,
		// A red widget meters power: a driver may class each device by its options.
		DeviceClass: func(spec sensors.Spec) sensors.Class {
			if sensors.Opts[widgetOptions](spec).Colour == "red" {
				return sensors.ClassPower
			}
			return ""
		},
		Options:  widgetOptions{},
		Required: []string{"colour"},
		Metrics:  map[string]string{"spin": "rpm", "colour": ""},
		Check: func(spec sensors.Spec) error {
			if c := sensors.Opts[widgetOptions](spec).Colour; c != "red" && c != "blue" {
				return &sensors.KeyError{Key: "colour", Err: fmt.Errorf("widgets come in red or blue, not %q", c)}
			}
			return nil
		},
		New: func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) {
			return widget{id: spec.ID, o: sensors.Opts[widgetOptions](spec)}, nil
		},
	})
}

func TestDriverSeam(t *testing.T) {
	dir := t.TempDir()
	write := func(name, devices string) string {
		p := filepath.Join(dir, name)
		src := "site: lab\nnode: r1\nweb: {listen: \"127.0.0.1:0\"}\ndevices:\n" + devices +
			"rules:\n  - {name: widget-fast, device: widget1, metric: spin, warn_above: 5000}\n"
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "  - {id: widget1, driver: seamtest.widget, colour: blue, rpm: 1200, poll: 200ms}\n"+
		"  - {id: widget2, driver: seamtest.widget, colour: red, rpm: 7, poll: 200ms}\n")
	if run([]string{"-config", good, "-check"}) != 0 {
		t.Fatal("-check refused a config with the test driver")
	}
	// The driver's own keys and checks, with their lines.
	for name, tc := range map[string]struct{ devices, want string }{
		"unknown key": {"  - {id: w, driver: seamtest.widget, colour: red}\n  - {id: w2, driver: seamtest.widget,\n     colour: red, flavour: mint}\n", `:7: unknown key "flavour"`},
		"own check":   {"  - {id: w, driver: seamtest.widget, colour: red}\n  - id: w2\n    driver: seamtest.widget\n    colour: green\n", `:8: device "w2": widgets come in red or blue, not "green"`},
		"required":    {"  - {id: w, driver: seamtest.widget, colour: red}\n  - {id: w2, driver: seamtest.widget, rpm: 3}\n", `:6: device "w2": the seamtest.widget driver needs "colour"`},
		"type":        {"  - {id: w, driver: seamtest.widget, colour: red, rpm: fast}\n", `:5: cannot read`},
	} {
		p := write(strings.ReplaceAll(name, " ", "-")+".yaml", tc.devices)
		if run([]string{"-config", p, "-check"}) == 0 {
			t.Errorf("%s: -check accepted it", name)
		}
		if _, err := config.Load(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want %q in:\n%v", name, tc.want, err)
		}
	}

	cfg, err := config.Load(good)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *site.Site, 1)
	done := make(chan error, 1)
	go func() {
		done <- site.Run(ctx, cfg, site.Options{Version: "test", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Ready: func(s *site.Site) { ready <- s }})
	}()
	var base string
	select {
	case s := <-ready:
		base = "http://" + s.WebAddr().String()
	case err := <-done:
		t.Fatalf("site did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("site did not start within 60s")
	}
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// The page sorts the widgets by their class: an environmental device is a row of the
	// cooling section, a power one a feed of the power section, although neither their
	// names nor their readings say so.
	section := func(page, id string) string {
		i := strings.Index(page, `<section id="`+id+`"`)
		if i < 0 {
			return ""
		}
		j := strings.Index(page[i:], "</section>")
		if j < 0 {
			return ""
		}
		return page[i : i+j]
	}
	var page, metrics string
	deadline := time.Now().Add(60 * time.Second)
	for {
		page, metrics = get("/"), get("/metrics")
		sec, power := section(page, "cooling"), section(page, "power")
		if strings.Contains(sec, "widget1") && strings.Contains(sec, "spin") && strings.Contains(sec, "1200") && !strings.Contains(sec, "widget2") &&
			strings.Contains(power, "widget2") && strings.Contains(power, "7") && !strings.Contains(power, "widget1") &&
			strings.Contains(metrics, `rackwatch_reading{device="widget1",metric="spin",unit="rpm"} 1200`) &&
			strings.Contains(metrics, `rackwatch_device_up{device="widget1",driver="seamtest.widget",state="ok"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the widgets are not polled, on the page by class and in /metrics within 60s\ncooling section:\n%s\npower section:\n%s\nmetrics:\n%s", sec, power, grepLines(metrics, "widget"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("site.Run: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
