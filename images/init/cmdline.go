package main

import (
	"strconv"
	"strings"
)

// options are the rackwatch.* settings of the kernel command line.
type options struct {
	IP            string // CIDR, or "off"
	GW            string
	DNS           string
	DataPartition string // GPT partition name
	// Watchdog is the hardware watchdog's timeout, in seconds.
	Watchdog int
	// Slot is the slot the boot script booted ("a" or "b"; "" when booted otherwise).
	Slot string
	// StartTimeout is how long rackwatch may take to say READY=1, in seconds.
	StartTimeout int
}

// parseCmdline reads the rackwatch.* keys of a kernel command line. Unknown keys are ignored:
// the line also carries the kernel's own parameters. Quoting (key="a b") follows the kernel's
// rules closely enough for the values we take, which never contain spaces.
func parseCmdline(s string) options {
	o := options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data", Watchdog: 30, StartTimeout: 120}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		switch k {
		case "rackwatch.ip":
			o.IP = v
		case "rackwatch.gw":
			o.GW = v
		case "rackwatch.dns":
			o.DNS = v
		case "rackwatch.data":
			if v != "" {
				o.DataPartition = v
			}
		case "rackwatch.watchdog":
			// Out-of-range values keep the default: a typo must not disarm the watchdog.
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 600 {
				o.Watchdog = n
			}
		case "rackwatch.slot":
			if v == "a" || v == "b" {
				o.Slot = v
			}
		case "rackwatch.start_timeout":
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 3600 {
				o.StartTimeout = n
			}
		}
	}
	return o
}
