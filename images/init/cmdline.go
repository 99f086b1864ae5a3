package main

import "strings"

// options are the rackwatch.* settings of the kernel command line.
type options struct {
	IP            string // CIDR, or "off"
	GW            string
	DNS           string
	DataPartition string // GPT partition name
}

// parseCmdline reads the rackwatch.* keys of a kernel command line. Unknown keys are ignored:
// the line also carries the kernel's own parameters. Quoting (key="a b") follows the kernel's
// rules closely enough for the values we take, which never contain spaces.
func parseCmdline(s string) options {
	o := options{IP: "10.0.2.15/24", GW: "10.0.2.2", DataPartition: "rackwatch-data"}
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
		}
	}
	return o
}
