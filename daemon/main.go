// Command rackwatch is the daemon of a rack appliance: it reads the rack's UPS, power, cooling
// and contact sensors, decides locally (rules, failover), and reports to central ITOps over
// MQTT. See CONTRACT.md for its interfaces and README.md for how to run it.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	"github.com/rackwatch/rackwatch/daemon/update"
	_ "github.com/rackwatch/rackwatch/sensors/all"
)

// version is set by the build (-ldflags "-X main.version=…").
var version = "dev"

//go:embed demo.yaml
var demoConfig []byte

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("rackwatch", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "site config `FILE` (default: the built-in demo site)")
	check := fs.Bool("check", false, "check the config and exit: 0 when valid, 1 with every problem on stderr")
	showVersion := fs.Bool("version", false, "print the version and exit")
	replay := fs.String("replay", "", "feed the readings of `TIMELINE.yaml` through the rules and policies on a virtual clock and print the decisions as JSON lines")
	verify := fs.Bool("verify-audit", false, "check the audit trail's hash chain and exit: 0 and the record count, or 1 and the first broken record")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	testNotify := fs.String("test-notify", "", "send a test event to the notify `TARGET` of the config, print the outcome and exit: 0 delivered, 1 not")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("rackwatch", version)
		return 0
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "rackwatch: -log-level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)

	load := func() (*config.Config, error) {
		if *cfgPath == "" {
			cfg, err := config.Parse("demo.yaml", demoConfig)
			if err == nil {
				cfg.DataDir = demoDataDir()
			}
			return cfg, err
		}
		return config.Load(*cfgPath)
	}
	cfg, err := load()
	if *check {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%s: ok (%d devices, %d rules)\n", cfg.Path, len(cfg.Devices), len(cfg.Rules))
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *verify {
		return verifyAudit(cfg, os.Stdout, os.Stderr)
	}
	if *replay != "" {
		return runReplay(cfg, *replay, os.Stdout, os.Stderr)
	}
	if *testNotify != "" {
		return runTestNotify(cfg, *testNotify, os.Stdout, os.Stderr)
	}

	// A log reader that goes away (a supervisor stopping, journald restarting) must not kill
	// the daemon with SIGPIPE in the middle of a clean stop: writes to it just fail.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cfgPath == "" {
		printDemo(cfg)
	}
	first := true
	sv := site.NewSupervisor(func() (*config.Config, error) {
		if first {
			first = false
			return cfg, nil
		}
		next, err := load()
		if err == nil && *cfgPath == "" {
			next.DataDir = cfg.DataDir
		}
		return next, err
	}, site.Options{Version: version, Log: log, Ready: func(*site.Site) { sd.SdNotify(false, sd.SdNotifyReady) },
		Update: updateOptions()})
	// SIGHUP and the MQTT reload command take the same path (Supervisor.Reload); a reload
	// never ends the daemon. Signals that come during a reload are one more reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				sd.SdNotify(false, sd.SdNotifyStopping)
				return
			case <-hup:
				sd.SdNotify(false, sd.SdNotifyReloading)
				if err := sv.Reload(ctx, "signal:SIGHUP"); err != nil {
					sd.SdNotify(false, sd.SdNotifyReady)
				}
			}
		}
	}()
	go watchdog(ctx)
	go keepMemoryLimit(ctx, log)
	if err := sv.Run(ctx); err != nil {
		log.Error("rackwatch stopped", "err", err)
		return 1
	}
	log.Info("rackwatch stopped cleanly")
	return 0
}

// updateOptions are what /init tells rackwatch about the firmware image (images/README.md):
// the slot booted and the boot partition. Elsewhere they are empty and nothing is installed.
func updateOptions() update.Options {
	o := update.Options{Slot: os.Getenv("RACKWATCH_SLOT"), BootDir: os.Getenv("RACKWATCH_BOOT_DIR")}
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		o.SpoolDir = filepath.Join(d, "tmp")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		o.BootID = strings.TrimSpace(string(b))
	}
	return o
}

// watchdog pings systemd's watchdog while the daemon runs (no-op outside systemd).
func watchdog(ctx context.Context) {
	every, err := sd.SdWatchdogEnabled(false)
	if err != nil || every == 0 {
		return
	}
	t := time.NewTicker(every / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sd.SdNotify(false, sd.SdNotifyWatchdog)
		}
	}
}

func demoDataDir() string {
	if d := os.Getenv("RACKWATCH_DEMO_DIR"); d != "" {
		return d
	}
	return filepath.Join(config.DefaultDataDir(), "demo")
}

func printDemo(cfg *config.Config) {
	mqttHost, mqttPort, _ := net.SplitHostPort(cfg.MQTT.EmbeddedBroker)
	fmt.Printf(`rackwatch %s: demo site %s/%s (simulated UPS, sensors, contacts and relays; the story
repeats every few minutes: mains outage, cooling fault, door, leak, sensor loss)

  status page   http://%s/
  status API    http://%s/api/v1/status
  metrics       http://%s/metrics
  MQTT broker   tcp://%s  (mosquitto_sub -h %s -p %s -t '%s/#' -v)
  NUT server    %s  (upsc ups1@%s)
  data          %s

Ctrl-C stops it.
`, version, cfg.Site, cfg.Node, cfg.Web.Listen, cfg.Web.Listen, cfg.Web.Listen, cfg.MQTT.EmbeddedBroker,
		mqttHost, mqttPort, cfg.MQTT.Prefix, cfg.NUT.Listen, cfg.NUT.Listen, cfg.DataDir)
}
