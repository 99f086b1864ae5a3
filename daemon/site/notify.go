package site

import (
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
