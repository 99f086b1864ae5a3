package site

import (
	"context"

	"github.com/rackwatch/rackwatch/daemon/audit"
	"github.com/rackwatch/rackwatch/daemon/incident"
	"github.com/rackwatch/rackwatch/daemon/notify"
)

// newNotifier makes the notify targets' senders of the site's config (nil: none configured).
func newNotifier(s *Site) (*notify.Notifier, error) {
	cfg := s.cfg.Notify
	if len(cfg.Targets) == 0 {
		return nil, nil
	}
	if cfg.PageURL == "" {
		cfg.PageURL = notify.PageURL(s.cfg.Web.Listen, s.cfg.Web.TLSCert != "")
	}
	return notify.New(s.db, cfg, notify.Options{Site: s.cfg.Site, Node: s.cfg.Node, Log: s.log.With("part", "notify"), Now: s.now})
}

// withSent fills in where each incident's latest event stands at the notify targets.
func (s *Site) withSent(ins []incident.Incident) []incident.Incident {
	if s.notify == nil {
		return ins
	}
	for i := range ins {
		for t, d := range s.notify.Deliveries(ins[i].ID) {
			if ins[i].Sent == nil {
				ins[i].Sent = map[string]string{}
			}
			ins[i].Sent[t] = d.State
		}
	}
	return ins
}

// startAuditTargets sends the audit trail to the notify targets with audit: true, each from
// where it stopped (a target new to the trail from the trail's head), until ctx ends.
func (s *Site) startAuditTargets(ctx context.Context) {
	if s.sh.audit == nil {
		return
	}
	var names []string
	if s.notify != nil {
		names = s.notify.AuditTargets()
	}
	if err := s.sh.audit.ForgetCursors(names); err != nil {
		s.log.Error("audit: forget the cursors of former notify targets", "err", err)
	}
	for _, name := range names {
		log := s.log.With("part", "notify", "target", name)
		failing := false
		send := func(ctx context.Context, r audit.Record) error {
			err := s.notify.SendAudit(ctx, name, r)
			switch {
			case err != nil && !failing && ctx.Err() == nil:
				log.Warn("audit records not delivered; retrying", "err", err)
			case err == nil && failing:
				log.Info("audit records delivered again")
			}
			failing = err != nil
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.sh.audit.PublishTo(ctx, name, send); err != nil {
				log.Error("audit records not sent to this target", "err", err)
			}
		}()
	}
}
