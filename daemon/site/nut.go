package site

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/rackwatch/rackwatch/daemon/nut"
	"github.com/rackwatch/rackwatch/sensors"
)

// nutServe is a built NUT server, served by launch.
type nutServe struct{ srv *nut.Server }

// buildNUT makes the NUT server and binds nut.listen when it is set.
func (s *Site) buildNUT() error {
	c := s.cfg.NUT
	if c.Listen == "" {
		return nil
	}
	users := make([]nut.User, 0, len(c.Users))
	for _, u := range c.Users {
		users = append(users, nut.User{Name: u.Name, PasswordFile: u.PasswordFile, Password: u.Password, Upsmon: u.Upsmon, Instcmds: u.Instcmds})
	}
	srv, err := nut.New(nut.Config{Listen: c.Listen, Users: users, MaxConnections: c.MaxConns, IdleTimeout: c.IdleTimeout,
		MaxConnsPerAddr: c.MaxConnsPerAddr, TLSCert: c.TLSCert, TLSKey: c.TLSKey, Version: s.opt.Version, Audit: s.sh.auditNUT}, nutSource{s}, s.log)
	if err != nil {
		return fmt.Errorf("nut: %w", err)
	}
	if err := s.metrics.reg.Register(srv.Collector()); err != nil {
		s.log.Warn("nut: metrics", "err", err)
	}
	l, err := s.sh.listen(c.Listen)
	if err != nil {
		return fmt.Errorf("nut: %w", err)
	}
	s.nutAddr = l.Addr()
	s.nut = nutClients{srv}
	s.nutSrv = &nutServe{srv}
	return nil
}

// NUTAddr is where the NUT server listens (nil when off).
func (s *Site) NUTAddr() net.Addr { return s.nutAddr }

type nutClients struct{ srv *nut.Server }

func (n nutClients) Clients() []string {
	var out []string
	for _, c := range n.srv.Clients() {
		role := "secondary"
		if c.Primary {
			role = "primary"
		}
		out = append(out, fmt.Sprintf("%s@%s on %s (%s)", c.User, c.Addr, c.UPS, role))
	}
	return out
}

// nutSource shows the site's UPS devices to the NUT server, each by its id.
type nutSource struct{ s *Site }

func (n nutSource) UPSNames() []string {
	var names []string
	for _, d := range n.s.cfg.Devices {
		if sensors.SpecClass(d) == sensors.ClassUPS {
			names = append(names, d.ID)
		}
	}
	return names
}

func (n nutSource) UPS(name string) (nut.UPS, bool) {
	spec, ok := n.s.specs[name]
	if !ok || sensors.SpecClass(spec) != sensors.ClassUPS {
		return nut.UPS{}, false
	}
	d, ok := n.s.store.Device(name)
	if !ok {
		return nut.UPS{}, false
	}
	u := nut.UPS{Description: spec.Description, Vars: map[string]string{"device.type": "ups", "driver.name": spec.Driver}}
	for m, r := range d.Readings {
		if r.Quality == sensors.Error || (r.IsText && r.Text == "") {
			continue // upsd leaves out what the driver does not have (an empty ups.alarm)
		}
		u.Vars[m] = nutValue(r)
	}
	// An ordered shutdown is served even before the first poll after a restart, and while the
	// UPS is silent: it is what the protected servers must act on.
	status := d.Readings["ups.status"].Text
	n.s.mu.Lock()
	ordered := n.s.fsd[name]
	n.s.mu.Unlock()
	if ordered && !hasFlag(status, "FSD") {
		// A failed poll leaves no status to add FSD to; the order stands all the same.
		status = strings.TrimSpace(status + " FSD")
		u.Vars["ups.status"] = status
	}
	u.Stale = (d.State == sensors.DeviceStale && !hasFlag(status, "FSD")) || status == ""
	if dev := n.s.devs[name]; dev == nil {
		u.Disconnected = true
	} else if c, ok := dev.(sensors.Commander); ok {
		u.Commands = c.Commands()
	}
	return u, true
}

// nutValue prints a reading as NUT drivers do: words as they are, numbers without a needless
// fraction (NUT prints what the device said; "230" and "230.0" are the same to its clients).
func nutValue(r sensors.Reading) string {
	if r.IsText {
		return r.Text
	}
	return strconv.FormatFloat(r.Value, 'f', -1, 64)
}

func (n nutSource) InstCmd(ctx context.Context, name, cmd, arg string) error {
	dev, ok := n.s.devs[name].(sensors.Commander)
	if !ok {
		return nut.ErrCmdNotSupported
	}
	supported := false
	for _, c := range dev.Commands() {
		if c == cmd {
			supported = true
		}
	}
	if !supported {
		return nut.ErrCmdNotSupported
	}
	n.s.log.Warn("NUT instant command", "ups", name, "command", cmd, "arg", arg)
	return dev.Command(ctx, cmd, arg)
}

// SetFSD is a primary upsmon's FSD: the UPS shows FSD from now on, as with upsd.
func (n nutSource) SetFSD(name string) error {
	s := n.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return errReloading
	}
	if _, ok := s.specs[name]; !ok {
		return fmt.Errorf("no UPS %q", name)
	}
	s.log.Warn("FSD set by a NUT primary", "ups", name)
	s.fsd[name] = true
	s.markFSD(name, true)
	return nil
}
