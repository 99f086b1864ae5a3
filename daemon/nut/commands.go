package nut

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The ERR codes of NUT's server/neterr.h that this server sends.
const (
	errAccessDenied         = "ACCESS-DENIED"
	errUnknownUPS           = "UNKNOWN-UPS"
	errVarNotSupported      = "VAR-NOT-SUPPORTED"
	errCmdNotSupported      = "CMD-NOT-SUPPORTED"
	errInvalidArgument      = "INVALID-ARGUMENT"
	errInstcmdFailed        = "INSTCMD-FAILED"
	errSetFailed            = "SET-FAILED"
	errReadonly             = "READONLY"
	errFeatureNotConfigured = "FEATURE-NOT-CONFIGURED"
	errAlreadySSLMode       = "ALREADY-SSL-MODE"
	errDriverNotConnected   = "DRIVER-NOT-CONNECTED"
	errDataStale            = "DATA-STALE"
	errAlreadyLoggedIn      = "ALREADY-LOGGED-IN"
	errAlreadySetPassword   = "ALREADY-SET-PASSWORD"
	errAlreadySetUsername   = "ALREADY-SET-USERNAME"
	errUsernameRequired     = "USERNAME-REQUIRED"
	errPasswordRequired     = "PASSWORD-REQUIRED"
	errUnknownCommand       = "UNKNOWN-COMMAND"
)

// action is what the connection does after sending a reply.
type action int

const (
	carryOn action = iota
	hangUp
	startTLS
)

type handler func(c *conn, ctx context.Context, args []string) (string, action)

type command struct {
	fn       handler
	needUser bool // upsd's FLAG_USER: USERNAME and PASSWORD must have been sent
}

// commands is upsd's netcmds table (NUT 2.8).
var commands map[string]command

func init() {
	commands = map[string]command{
		"VER":      {fn: (*conn).ver},
		"NETVER":   {fn: (*conn).netver},
		"PROTVER":  {fn: (*conn).netver},
		"HELP":     {fn: (*conn).help},
		"STARTTLS": {fn: (*conn).starttls},
		"GET":      {fn: (*conn).get},
		"LIST":     {fn: (*conn).list},
		"USERNAME": {fn: (*conn).setUsername},
		"PASSWORD": {fn: (*conn).setPassword},
		"LOGIN":    {fn: (*conn).login, needUser: true},
		"LOGOUT":   {fn: (*conn).logout},
		"PRIMARY":  {fn: primaryCmd("PRIMARY"), needUser: true},
		"MASTER":   {fn: primaryCmd("MASTER"), needUser: true},
		"FSD":      {fn: (*conn).fsd, needUser: true},
		"SET":      {fn: (*conn).set, needUser: true},
		"INSTCMD":  {fn: (*conn).instcmd, needUser: true},
	}
}

func errLine(code string) string { return "ERR " + code + "\n" }

// dispatch answers one parsed request line.
func (c *conn) dispatch(ctx context.Context, words []string) (string, action) {
	if len(words) == 0 {
		return errLine(errUnknownCommand), carryOn // what upsd says to an empty line
	}
	cmd, ok := commands[strings.ToUpper(words[0])]
	if !ok {
		return errLine(errUnknownCommand), carryOn
	}
	if cmd.needUser {
		if !c.userSet {
			return errLine(errUsernameRequired), carryOn
		}
		if !c.pwSet {
			return errLine(errPasswordRequired), carryOn
		}
	}
	return cmd.fn(c, ctx, words[1:])
}

// lookup finds a UPS by name, ignoring case as upsd does.
func (c *conn) lookup(name string) (string, UPS, bool) {
	if u, ok := c.s.src.UPS(name); ok {
		return name, u, true
	}
	for _, n := range c.s.src.UPSNames() {
		if strings.EqualFold(n, name) {
			u, ok := c.s.src.UPS(n)
			return n, u, ok
		}
	}
	return "", UPS{}, false
}

// unavailable is upsd's ups_available: the error code for a UPS without usable data, or "".
func unavailable(u UPS) string {
	switch {
	case u.Disconnected:
		return errDriverNotConnected
	case u.Stale:
		return errDataStale
	}
	return ""
}

// varValue looks a variable up, ignoring case as upsd's state tree does.
func varValue(u UPS, name string) (string, bool) {
	if v, ok := u.Vars[name]; ok {
		return v, true
	}
	for k, v := range u.Vars {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// allowed is upsd's user_checkaction.
func (c *conn) allowed(act string) bool {
	a, ok := c.authenticate()
	return ok && a.actions[act]
}

func (c *conn) ver(_ context.Context, args []string) (string, action) {
	if len(args) != 0 {
		return errLine(errInvalidArgument), carryOn
	}
	s := "Network UPS Tools upsd " + nutVersion + " - http://www.networkupstools.org/"
	if c.s.cfg.Version != "" {
		s += " (rackwatch " + c.s.cfg.Version + ")"
	}
	return s + "\n", carryOn
}

func (c *conn) netver(_ context.Context, args []string) (string, action) {
	if len(args) != 0 {
		return errLine(errInvalidArgument), carryOn
	}
	return netVersion + "\n", carryOn
}

func (c *conn) help(_ context.Context, args []string) (string, action) {
	if len(args) != 0 {
		return errLine(errInvalidArgument), carryOn
	}
	return "Commands: HELP VER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD STARTTLS\n", carryOn
}

func (c *conn) starttls(_ context.Context, _ []string) (string, action) {
	if c.tls {
		return errLine(errAlreadySSLMode), carryOn
	}
	if c.s.tls == nil {
		return errLine(errFeatureNotConfigured), carryOn
	}
	return "OK STARTTLS\n", startTLS
}

func (c *conn) get(_ context.Context, args []string) (string, action) {
	if len(args) < 1 {
		return errLine(errInvalidArgument), carryOn
	}
	sub := strings.ToUpper(args[0])
	if sub == "TRACKING" {
		if len(args) < 2 {
			return "OFF\n", carryOn
		}
		return errLine(errFeatureNotConfigured), carryOn
	}
	if len(args) < 2 {
		return errLine(errInvalidArgument), carryOn
	}
	upsname := args[1]
	switch sub {
	case "NUMLOGINS":
		name, u, ok := c.lookup(upsname)
		if !ok {
			return errLine(errUnknownUPS), carryOn
		}
		if e := unavailable(u); e != "" {
			return errLine(e), carryOn
		}
		return fmt.Sprintf("NUMLOGINS %s %d\n", upsname, c.s.NumLogins(name)), carryOn
	case "UPSDESC":
		_, u, ok := c.lookup(upsname)
		if !ok {
			return errLine(errUnknownUPS), carryOn
		}
		desc := "Unavailable"
		if u.Description != "" {
			desc = encode(u.Description)
		}
		return fmt.Sprintf("UPSDESC %s \"%s\"\n", upsname, desc), carryOn
	}
	if len(args) < 3 {
		return errLine(errInvalidArgument), carryOn
	}
	name := args[2]
	if sub == "VAR" && len(name) >= 7 && strings.EqualFold(name[:7], "server.") {
		// upsd answers these whatever the UPS name.
		switch strings.ToLower(name) {
		case "server.info":
			return fmt.Sprintf("VAR %s server.info \"Network UPS Tools upsd %s - http://www.networkupstools.org/\"\n",
				upsname, nutVersion), carryOn
		case "server.version":
			return fmt.Sprintf("VAR %s server.version \"%s\"\n", upsname, nutVersion), carryOn
		}
		return errLine(errVarNotSupported), carryOn
	}
	switch sub {
	case "VAR", "TYPE", "DESC", "CMDDESC":
	default:
		return errLine(errInvalidArgument), carryOn
	}
	_, u, ok := c.lookup(upsname)
	if !ok {
		return errLine(errUnknownUPS), carryOn
	}
	if e := unavailable(u); e != "" {
		return errLine(e), carryOn
	}
	switch sub {
	case "VAR":
		v, ok := varValue(u, name)
		if !ok {
			return errLine(errVarNotSupported), carryOn
		}
		return fmt.Sprintf("VAR %s %s \"%s\"\n", upsname, name, encode(v)), carryOn
	case "TYPE":
		if _, ok := varValue(u, name); !ok {
			return errLine(errVarNotSupported), carryOn
		}
		// Nothing here is writable, and upsd calls every variable without a type flag
		// a NUMBER, status words included.
		return fmt.Sprintf("TYPE %s %s NUMBER\n", upsname, name), carryOn
	case "DESC":
		d, ok := varDesc[strings.ToLower(name)]
		if !ok {
			d = "Description unavailable"
		}
		return fmt.Sprintf("DESC %s %s \"%s\"\n", upsname, name, d), carryOn
	default: // CMDDESC
		d, ok := cmdDesc[strings.ToLower(name)]
		if !ok {
			d = "Description unavailable"
		}
		return fmt.Sprintf("CMDDESC %s %s \"%s\"\n", upsname, name, d), carryOn
	}
}

func (c *conn) list(_ context.Context, args []string) (string, action) {
	if len(args) < 1 {
		return errLine(errInvalidArgument), carryOn
	}
	sub := strings.ToUpper(args[0])
	var b strings.Builder
	if sub == "UPS" {
		b.WriteString("BEGIN LIST UPS\n")
		for _, n := range c.s.src.UPSNames() {
			u, ok := c.s.src.UPS(n)
			if !ok {
				continue // gone since UPSNames: as if it never was
			}
			desc := "Description unavailable"
			if u.Description != "" {
				desc = encode(u.Description)
			}
			fmt.Fprintf(&b, "UPS %s \"%s\"\n", n, desc)
		}
		b.WriteString("END LIST UPS\n")
		return b.String(), carryOn
	}
	if len(args) < 2 {
		return errLine(errInvalidArgument), carryOn
	}
	upsname := args[1]
	switch sub {
	case "VAR", "RW", "CMD", "CLIENT":
	case "ENUM", "RANGE":
		if len(args) < 3 {
			return errLine(errInvalidArgument), carryOn
		}
	default:
		return errLine(errInvalidArgument), carryOn
	}
	name, u, ok := c.lookup(upsname)
	if !ok {
		return errLine(errUnknownUPS), carryOn
	}
	if sub == "CLIENT" {
		// upsd lists clients even of a stale UPS.
		fmt.Fprintf(&b, "BEGIN LIST CLIENT %s\n", upsname)
		for _, cl := range c.s.Clients() {
			if cl.UPS == name {
				fmt.Fprintf(&b, "CLIENT %s %s\n", cl.UPS, cl.Addr)
			}
		}
		fmt.Fprintf(&b, "END LIST CLIENT %s\n", upsname)
		return b.String(), carryOn
	}
	if e := unavailable(u); e != "" {
		return errLine(e), carryOn
	}
	switch sub {
	case "VAR":
		fmt.Fprintf(&b, "BEGIN LIST VAR %s\n", upsname)
		for _, k := range sortedVars(u) {
			fmt.Fprintf(&b, "VAR %s %s \"%s\"\n", upsname, k, encode(u.Vars[k]))
		}
		fmt.Fprintf(&b, "END LIST VAR %s\n", upsname)
	case "RW":
		// Nothing is writable through rackwatch.
		fmt.Fprintf(&b, "BEGIN LIST RW %s\nEND LIST RW %s\n", upsname, upsname)
	case "CMD":
		fmt.Fprintf(&b, "BEGIN LIST CMD %s\n", upsname)
		for _, cmd := range u.Commands {
			fmt.Fprintf(&b, "CMD %s %s\n", upsname, cmd)
		}
		fmt.Fprintf(&b, "END LIST CMD %s\n", upsname)
	case "ENUM", "RANGE":
		v := args[2]
		if _, ok := varValue(u, v); !ok {
			return errLine(errVarNotSupported), carryOn
		}
		// No variable has enumerated values or ranges: both lists are empty.
		fmt.Fprintf(&b, "BEGIN LIST %s %s %s\nEND LIST %s %s %s\n", sub, upsname, v, sub, upsname, v)
	}
	return b.String(), carryOn
}

// sortedVars gives LIST VAR's order: upsd walks a tree sorted by name.
func sortedVars(u UPS) []string {
	keys := make([]string, 0, len(u.Vars))
	for k := range u.Vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (c *conn) setUsername(_ context.Context, args []string) (string, action) {
	if len(args) != 1 {
		return errLine(errInvalidArgument), carryOn
	}
	if c.userSet {
		c.s.log.Info("NUT client tried to set a username twice", "user", c.username, "from", c.addr)
		return errLine(errAlreadySetUsername), carryOn
	}
	c.s.mu.Lock()
	c.username, c.userSet = args[0], true
	c.s.mu.Unlock()
	return "OK\n", carryOn
}

func (c *conn) setPassword(_ context.Context, args []string) (string, action) {
	if len(args) != 1 {
		return errLine(errInvalidArgument), carryOn
	}
	if c.pwSet {
		c.s.log.Info("NUT client tried to set a password twice", "user", c.username, "from", c.addr)
		return errLine(errAlreadySetPassword), carryOn
	}
	c.password, c.pwSet = args[0], true
	return "OK\n", carryOn
}

func (c *conn) login(_ context.Context, args []string) (string, action) {
	if len(args) != 1 {
		return errLine(errInvalidArgument), carryOn
	}
	if c.loginUPS != "" {
		c.s.log.Info("NUT client tried to log in twice", "user", c.username, "from", c.addr)
		return errLine(errAlreadyLoggedIn), carryOn
	}
	name, _, ok := c.lookup(args[0])
	if !ok {
		return errLine(errUnknownUPS), carryOn
	}
	if !c.allowed("LOGIN") {
		c.s.log.Warn("NUT login refused", "user", c.username, "from", c.addr, "ups", name)
		return errLine(errAccessDenied), carryOn
	}
	c.s.mu.Lock()
	c.loginUPS, c.loginAt = name, time.Now()
	c.s.mu.Unlock()
	c.s.log.Info("NUT client logged in", "user", c.username, "from", c.addr, "ups", name, "tls", c.tls)
	return "OK\n", carryOn
}

func (c *conn) logout(_ context.Context, args []string) (string, action) {
	if len(args) != 0 {
		return errLine(errInvalidArgument), carryOn
	}
	if c.loginUPS != "" {
		c.s.log.Info("NUT client logged out", "user", c.username, "from", c.addr, "ups", c.loginUPS)
		c.s.mu.Lock()
		c.loginUPS = "" // logged out: no longer counted, nor logged again when the socket closes
		c.s.mu.Unlock()
	}
	return "OK Goodbye\n", hangUp
}

// audit tells the audit trail of a command done (ok) or refused.
func (c *conn) audit(action, ups, detail string, ok bool) {
	if c.s.cfg.Audit != nil {
		c.s.cfg.Audit(c.username, c.addr, action, ups, detail, ok)
	}
}

// primaryCmd answers PRIMARY, and MASTER its old name, with the name that was asked for.
func primaryCmd(word string) handler {
	return func(c *conn, _ context.Context, args []string) (string, action) {
		if len(args) != 1 {
			return errLine(errInvalidArgument), carryOn
		}
		if _, _, ok := c.lookup(args[0]); !ok {
			return errLine(errUnknownUPS), carryOn
		}
		if !c.allowed("PRIMARY") {
			c.audit("primary", args[0], "access denied", false)
			return errLine(errAccessDenied), carryOn
		}
		c.s.mu.Lock()
		c.primary = true
		c.s.mu.Unlock()
		c.audit("primary", args[0], word, true)
		return "OK " + word + "-GRANTED\n", carryOn
	}
}

func (c *conn) fsd(_ context.Context, args []string) (string, action) {
	if len(args) != 1 {
		return errLine(errInvalidArgument), carryOn
	}
	name, _, ok := c.lookup(args[0])
	if !ok {
		return errLine(errUnknownUPS), carryOn
	}
	if !c.allowed("FSD") {
		c.audit("fsd", name, "access denied", false)
		return errLine(errAccessDenied), carryOn
	}
	if err := c.s.src.SetFSD(name); err != nil {
		c.s.log.Error("NUT FSD failed", "user", c.username, "from", c.addr, "ups", name, "err", err)
		c.audit("fsd", name, "failed: "+err.Error(), true)
		return errLine(errSetFailed), carryOn
	}
	c.audit("fsd", name, "set", true)
	c.s.log.Warn("NUT client set FSD", "user", c.username, "from", c.addr, "ups", name)
	return "OK FSD-SET\n", carryOn
}

func (c *conn) set(_ context.Context, args []string) (string, action) {
	if len(args) < 4 || !strings.EqualFold(args[0], "VAR") {
		return errLine(errInvalidArgument), carryOn
	}
	_, u, ok := c.lookup(args[1])
	if !ok {
		return errLine(errUnknownUPS), carryOn
	}
	if !c.allowed("SET") {
		return errLine(errAccessDenied), carryOn
	}
	if e := unavailable(u); e != "" {
		return errLine(e), carryOn
	}
	if _, ok := varValue(u, args[2]); !ok {
		return errLine(errVarNotSupported), carryOn
	}
	return errLine(errReadonly), carryOn
}

func (c *conn) instcmd(ctx context.Context, args []string) (string, action) {
	if len(args) < 2 {
		return errLine(errInvalidArgument), carryOn
	}
	name, u, ok := c.lookup(args[0])
	if !ok {
		return errLine(errUnknownUPS), carryOn
	}
	if e := unavailable(u); e != "" {
		return errLine(e), carryOn
	}
	cmd := args[1]
	i := slices.IndexFunc(u.Commands, func(s string) bool { return strings.EqualFold(s, cmd) })
	if i < 0 {
		return errLine(errCmdNotSupported), carryOn
	}
	cmd = u.Commands[i]
	a, ok := c.authenticate()
	if !ok || !(a.instcmds["all"] || a.instcmds[strings.ToLower(cmd)]) {
		c.audit("instcmd", name, cmd+": access denied", false)
		return errLine(errAccessDenied), carryOn
	}
	var arg string
	if len(args) >= 3 {
		arg = args[2]
	}
	ctx, cancel := context.WithTimeout(ctx, instcmdTimeout)
	defer cancel()
	if err := c.s.src.InstCmd(ctx, name, cmd, arg); err != nil {
		if errors.Is(err, ErrCmdNotSupported) {
			return errLine(errCmdNotSupported), carryOn
		}
		c.s.log.Error("NUT instant command failed", "user", c.username, "from", c.addr, "ups", name,
			"cmd", cmd, "err", err)
		c.audit("instcmd", name, cmd+" "+arg+": failed: "+err.Error(), true)
		return errLine(errInstcmdFailed), carryOn
	}
	c.s.log.Info("NUT instant command", "user", c.username, "from", c.addr, "ups", name, "cmd", cmd, "arg", arg)
	c.audit("instcmd", name, strings.TrimSpace(cmd+" "+arg), true)
	return "OK\n", carryOn
}
