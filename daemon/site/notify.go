package site

import (
	"net"
	"os"

	"github.com/rackwatch/rackwatch/daemon/notify"
)

// newNotifier makes the notify targets' senders of the site's config (nil: none configured).
func newNotifier(s *Site) (*notify.Notifier, error) {
	cfg := s.cfg.Notify
	if len(cfg.Targets) == 0 {
		return nil, nil
	}
	if cfg.PageURL == "" {
		cfg.PageURL = pageURL(s.cfg.Web.Listen, s.cfg.Web.TLSCert != "")
	}
	return notify.New(s.db, cfg, notify.Options{Site: s.cfg.Site, Node: s.cfg.Node, Log: s.log.With("part", "notify"), Now: s.now})
}

// pageURL guesses the page's address from web.listen: a wildcard or loopback host is
// replaced by the machine's name, which is what a reader elsewhere can use.
func pageURL(listen string, tls bool) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}
