//go:build linux

package main

import (
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
)

// setupNetwork brings up lo and eth0 with the static address of the command line. QEMU's user
// network (10.0.2.15/24 via 10.0.2.2) is the default; a site sets its own in cmdline.txt.
func setupNetwork(o options) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if o.IP == "off" || o.IP == "" {
		return nil
	}
	addr, err := netlink.ParseAddr(o.IP)
	if err != nil {
		return fmt.Errorf("rackwatch.ip=%q: %w", o.IP, err)
	}
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("eth0 address %s: %w", o.IP, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	if o.GW != "" {
		gw := net.ParseIP(o.GW)
		if gw == nil {
			return fmt.Errorf("rackwatch.gw=%q: not an IP address", o.GW)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	if o.DNS != "" {
		if err := os.WriteFile("/etc/resolv.conf", []byte("nameserver "+o.DNS+"\n"), 0o644); err != nil {
			return fmt.Errorf("write resolv.conf: %w", err)
		}
	}
	return nil
}
