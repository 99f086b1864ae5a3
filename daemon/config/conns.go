package config

// checkLimits checks the connection limits and timeouts of the web and NUT servers.
func (c *checker) checkLimits(cfg *Config) {
	w := cfg.Web
	for _, v := range []struct {
		key string
		n   int64
	}{
		{"max_conns", int64(w.MaxConns)}, {"max_conns_per_addr", int64(w.MaxConnsPerAddr)},
		{"max_event_streams", int64(w.MaxEventStreams)}, {"read_header_timeout", int64(w.ReadHeaderTimeout)},
		{"read_timeout", int64(w.ReadTimeout)}, {"write_timeout", int64(w.WriteTimeout)}, {"idle_timeout", int64(w.IdleTimeout)},
	} {
		if v.n < 0 {
			c.addf(c.at("web", v.key), "web %s must not be negative (0 or leaving it out is the default)", v.key)
		}
	}
	if w.MaxConns > 0 && w.MaxConnsPerAddr > w.MaxConns {
		c.addf(c.at("web", "max_conns_per_addr"), "web max_conns_per_addr (%d) is more than max_conns (%d)", w.MaxConnsPerAddr, w.MaxConns)
	}
	n := cfg.NUT
	if n.MaxConnsPerAddr < 0 {
		c.addf(c.at("nut", "max_conns_per_addr"), "nut max_conns_per_addr must not be negative")
	}
	if n.MaxConns > 1 && n.MaxConnsPerAddr >= n.MaxConns {
		c.addf(c.at("nut", "max_conns_per_addr"), "nut max_conns_per_addr (%d) must be below max_conns (%d), so that one host cannot take them all", n.MaxConnsPerAddr, n.MaxConns)
	}
}
