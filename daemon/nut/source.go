package nut

import (
	"context"
	"errors"
)

// UPS is what the server shows of one UPS.
type UPS struct {
	// Description is what LIST UPS and GET UPSDESC print; empty gives upsd's placeholders.
	Description string
	// Vars maps NUT variable names to their values as NUT prints them ("OL", "230.0").
	// ups.status must already include FSD while a shutdown is ordered: the server never adds
	// it, so that a site and its NUT clients can never disagree about it.
	Vars map[string]string
	// Commands are the instant commands the UPS accepts (INSTCMD, LIST CMD).
	Commands []string
	// Stale: no fresh data; most requests answer ERR DATA-STALE, as upsd does when its
	// driver stops updating. upsmon counts a stale UPS as possibly dead after DEADTIME.
	Stale bool
	// Disconnected: there is no driver behind this UPS at all (ERR DRIVER-NOT-CONNECTED).
	// The zero value is "connected", so a site that never sets it gets sane answers.
	Disconnected bool
}

// Source is the site's side of the server. Its methods are called from one goroutine per
// client connection, concurrently, and must be safe for that. They should return quickly:
// a client waits on them.
type Source interface {
	// UPSNames lists the UPS names (device ids) in the order LIST UPS prints them.
	UPSNames() []string
	// UPS returns a snapshot of one UPS by its exact name.
	UPS(name string) (UPS, bool)
	// InstCmd forwards an instant command. ErrCmdNotSupported gives ERR CMD-NOT-SUPPORTED,
	// any other error ERR INSTCMD-FAILED.
	InstCmd(ctx context.Context, name, cmd, arg string) error
	// SetFSD records a primary upsmon's FSD order for the UPS: from then on its ups.status
	// must include FSD, so every secondary logged in to it shuts down.
	SetFSD(name string) error
}

// ErrCmdNotSupported is what Source.InstCmd returns for a command the UPS does not know.
var ErrCmdNotSupported = errors.New("command not supported")
