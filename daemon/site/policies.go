package site

import (
	"time"

	"github.com/rackwatch/rackwatch/daemon/poll"
	"github.com/rackwatch/rackwatch/daemon/web"
)

// policies runs the local failover policies (failover.power, failover.cooling). Called with
// s.mu held.
type policies struct {
	s *Site
}

func newPolicies(s *Site) *policies { return &policies{s: s} }

func (p *policies) observe(res poll.Result) {}

func (p *policies) tick(now time.Time) {}

func (p *policies) status() web.Failover { return web.Failover{} }
