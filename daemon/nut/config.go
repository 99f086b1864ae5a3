package nut

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is the server's configuration (CONTRACT.md §2, nut:). The yaml names are offered to
// the site's config package; only listen and users (name, password_file) are in the contract.
type Config struct {
	// Listen is host:port, e.g. 127.0.0.1:3493, for ListenAndServe.
	Listen string `yaml:"listen"`
	Users  []User `yaml:"users"`
	// MaxConnections caps simultaneous clients; more are closed at once. Default 64.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnsPerAddr caps the clients of one address (an IPv4 address or an IPv6 /64), so
	// that one host cannot take every place. Default 16, at most half of MaxConnections.
	MaxConnsPerAddr int `yaml:"max_conns_per_addr"`
	// IdleTimeout closes a client that sends nothing for this long. Default 60 s, which is
	// what upsd does; upsmon sends a request every POLLFREQ (5 s) and reconnects if cut off.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// WriteTimeout closes a client that does not read its answers for this long, so that it
	// holds nothing but its own goroutine. Default 10 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxLineLength bounds one request line, newline included. A longer line is answered
	// with ERR INVALID-ARGUMENT and the connection closed: nothing longer is ever buffered.
	// Default 1024 (upsd's own words stop at 512 bytes).
	MaxLineLength int `yaml:"max_line_length"`
	// TLSCert and TLSKey (PEM files) enable STARTTLS; without them STARTTLS is answered
	// ERR FEATURE-NOT-CONFIGURED, as upsd does without CERTFILE.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Version is rackwatch's version, shown in VER after the NUT version it follows.
	Version string `yaml:"-"`
	// Audit hears of PRIMARY (MASTER), FSD and INSTCMD, done (ok) or refused, with the user
	// and the client's address (the audit trail); nil: nobody.
	Audit func(user, addr, action, ups, detail string, ok bool) `yaml:"-"`
}

// User is one entry of upsd.users.
type User struct {
	Name string `yaml:"name"`
	// PasswordFile holds the password on its first line (trailing white space ignored).
	PasswordFile string `yaml:"password_file"`
	// Password is used when PasswordFile is empty (tests, or a site that has it already).
	Password string `yaml:"-"`
	// Upsmon is "primary" (old: "master"), "secondary" (old: "slave"), or "none".
	// Empty means secondary.
	Upsmon string `yaml:"upsmon"`
	// Instcmds are the instant commands this user may run; "all" allows every one.
	Instcmds []string `yaml:"instcmds"`
	// Actions are extra upsd actions: SET, FSD.
	Actions []string `yaml:"actions"`
}

const (
	defaultMaxConns = 64
	defaultPerAddr  = 16
	// After loginFreeFailures wrong passwords from one address, every password check of
	// that address is refused unchecked (ERR ACCESS-DENIED) for 30 s, doubling with each
	// further failure up to 15 min; failures are forgotten an hour after the last one.
	loginFreeFailures = 5
	defaultIdle       = 60 * time.Second
	defaultMaxLine    = 1024
	minMaxLine        = 64
	defaultWrite      = 10 * time.Second
	instcmdTimeout    = 10 * time.Second
	lingerTime        = 2 * time.Second
	lingerBytes       = 1 << 20
	nutVersion        = "2.8.0" // the upsd whose answers this server copies
	netVersion        = "1.3"
	pconfArgLimit     = 32  // upsd's parseconf drops words beyond this
	pconfWordLenLimit = 512 // and characters beyond this in a word
)

// account is a user ready for checking: password hashed so every compare takes the same time.
type account struct {
	name     string
	pwHash   [32]byte
	actions  map[string]bool // upper case
	instcmds map[string]bool // lower case; "all"
}

// CheckUser reports why users[i] cannot be loaded, without reading its password file (a
// config is checked where that file may not be). The site's config check calls it, so that
// -check refuses what New would.
func CheckUser(users []User, i int) error {
	u := users[i]
	if u.Name == "" {
		return fmt.Errorf("nut: users[%d]: no name", i)
	}
	for _, e := range users[:i] {
		if e.Name == u.Name {
			return fmt.Errorf("nut: user %s: defined twice", u.Name)
		}
	}
	if u.PasswordFile == "" && u.Password == "" {
		return fmt.Errorf("nut: user %s: no password (password_file)", u.Name)
	}
	if _, ok := upsmonActions[strings.ToLower(u.Upsmon)]; !ok {
		return fmt.Errorf("nut: user %s: upsmon %q: want primary, secondary or none", u.Name, u.Upsmon)
	}
	for _, act := range u.Actions {
		switch strings.ToUpper(act) {
		case "SET", "FSD":
		default:
			return fmt.Errorf("nut: user %s: action %q: want SET or FSD", u.Name, act)
		}
	}
	return nil
}

// upsmonActions are the upsd actions each upsmon role grants ("master" and "slave" are the
// names before NUT 2.8).
var upsmonActions = map[string][]string{
	"primary": {"LOGIN", "MASTER", "PRIMARY", "FSD"}, "master": {"LOGIN", "MASTER", "PRIMARY", "FSD"},
	"": {"LOGIN"}, "secondary": {"LOGIN"}, "slave": {"LOGIN"},
	"none": nil,
}

func loadAccounts(users []User) (map[string]*account, error) {
	out := make(map[string]*account, len(users))
	for i, u := range users {
		if err := CheckUser(users, i); err != nil {
			return nil, err
		}
		pw := u.Password
		if u.PasswordFile != "" {
			b, err := os.ReadFile(u.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("nut: user %s: read password: %w", u.Name, err)
			}
			line, _, _ := bytes.Cut(b, []byte("\n"))
			pw = strings.TrimRight(string(line), " \t\r")
		}
		if pw == "" {
			return nil, fmt.Errorf("nut: user %s: empty password", u.Name)
		}
		a := &account{name: u.Name, pwHash: sha256.Sum256([]byte(pw)),
			actions: map[string]bool{}, instcmds: map[string]bool{}}
		for _, act := range upsmonActions[strings.ToLower(u.Upsmon)] {
			a.actions[act] = true
		}
		for _, act := range u.Actions {
			a.actions[strings.ToUpper(act)] = true
		}
		for _, c := range u.Instcmds {
			a.instcmds[strings.ToLower(c)] = true
		}
		out[u.Name] = a
	}
	return out, nil
}

// dummyHash is compared against when the user does not exist, so that an unknown name costs
// the same time as a wrong password.
var dummyHash = sha256.Sum256([]byte("rackwatch: no such user"))

// check reports whether name/pw is a known user with the right password.
func check(accounts map[string]*account, name, pw string) (*account, bool) {
	h := sha256.Sum256([]byte(pw))
	a, ok := accounts[name]
	want := dummyHash
	if ok {
		want = a.pwHash
	}
	match := subtle.ConstantTimeCompare(h[:], want[:]) == 1
	return a, ok && match
}

func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		return nil, nil
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		return nil, fmt.Errorf("nut: tls_cert and tls_key go together")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("nut: load TLS key pair: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
