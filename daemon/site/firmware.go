package site

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/update"
	"github.com/rackwatch/rackwatch/uplink"
)

// firmwareKey is the incident a failed update raises and the next committed one resolves.
// It is a warning, not critical: when it is raised the board runs its old firmware again and
// watches the rack as before; what needs a person is the update, not the room.
const firmwareKey = "firmware:update"

// startUpdater makes the process's updater. One that cannot start (a damaged image) is
// logged and replaced by one that installs nothing: the rack stays watched.
func (sh *shared) startUpdater(opt Options) {
	uo := opt.Update
	uo.DB, uo.Version, uo.Log, uo.Report = sh.db, opt.Version, sh.log.With("part", "update"), sh.reportUpdate
	u, err := update.New(uo)
	if err != nil {
		sh.log.Error("firmware updates are off", "err", err)
		u, _ = update.New(update.Options{DB: sh.db, Version: opt.Version, Log: uo.Log, Report: sh.reportUpdate, DpkgList: uo.DpkgList})
	}
	sh.upd = u
}

// bootUpdater settles the last update once a site runs (its incidents take the result),
// and starts the commit of a trial. The goroutines end with ctx; done waits for them.
func (sh *shared) bootUpdater(ctx context.Context) (done func()) {
	if err := sh.upd.Boot(); err != nil {
		sh.log.Error("update: boot state", "err", err)
	}
	finished := make(chan struct{}, 2)
	go func() {
		defer func() { finished <- struct{}{} }()
		sh.upd.Run(ctx, func() error {
			s := sh.current()
			if s == nil {
				return errStopping
			}
			return backend{s}.Healthy()
		})
	}()
	go func() {
		defer func() { finished <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sh.upd.Changed():
				sh.withUplink(func(up *uplink.Uplink) error { up.RefreshState(); return nil })
			}
		}
	}()
	return func() { <-finished; <-finished }
}

// reportUpdate turns an update's outcome into an audit record and, for a failure, an
// incident.
func (sh *shared) reportUpdate(r update.Report) {
	l := r.Update
	actor := r.By
	if actor == "" {
		actor = "system"
	}
	detail := fmt.Sprintf("%s: %s (from %s, slot %s, key %s)", l.Outcome, l.Version, l.From, l.Slot, l.KeyID)
	if l.Error != "" {
		detail += ": " + l.Error
	}
	sh.record(audit.Record{Actor: actor, Source: sourceOf(r.By), Action: audit.ActionFirmware, Target: l.Version, Detail: cut(detail, 500)})
	s := sh.current()
	if s == nil {
		return
	}
	switch l.Outcome {
	case update.OutcomeRolledBack, update.OutcomeFailed:
		s.raise(incident.Raise{Key: firmwareKey, Rule: "firmware-update", Severity: incident.Warning, Source: "system",
			Summary: fmt.Sprintf("firmware update to %s %s: %s", l.Version, l.Outcome, l.Error), Value: l.Version}, s.now())
	case update.OutcomeCommitted:
		s.resolve(firmwareKey, l.Version, s.now())
	}
}

// webUpdate is POST /api/v1/update.
func (sh *shared) webUpdate(ctx context.Context, body io.Reader, user, client string) (int, any) {
	res, err := sh.upd.Install(ctx, body, user)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, update.ErrBusy):
			code = http.StatusConflict
		case errors.Is(err, update.ErrUnsupported):
			code = http.StatusNotImplemented
		case errors.Is(err, update.ErrRefused):
			code = http.StatusUnprocessableEntity
		}
		return code, map[string]any{"error": err.Error(), "firmware": sh.upd.Status()}
	}
	return http.StatusOK, res
}

// webUpdateFunc is web.Options.Update (nil when there is no updater: the replay).
func (sh *shared) webUpdateFunc() func(context.Context, io.Reader, string, string) (int, any) {
	if sh.upd == nil {
		return nil
	}
	return sh.webUpdate
}
