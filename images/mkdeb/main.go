// Command mkdeb builds rackwatch's Debian package for boards that run Debian (arm64, armhf)
// from a static binary and the packaging files in images/deb: the binary, the default config
// (a conffile), the systemd unit (Type=notify, WatchdogSec, hardened), the sysusers.d entry
// for the rackwatch user and its groups, and the maintainer scripts.
//
//	mkdeb -arch arm64 -binary rackwatch.arm64 -version 1.2.3 -o images/out
//
// It writes the .deb itself (ar, tar, gzip from the standard library), reproducibly: sorted
// members, root ownership, and SOURCE_DATE_EPOCH for every time. `dpkg-deb -I/-c` reads it;
// the tests check that. It is a build tool and must not import the daemon.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
)

func main() {
	var o options
	flag.StringVar(&o.Arch, "arch", "arm64", "Debian architecture: arm64, armhf, amd64")
	flag.StringVar(&o.Binary, "binary", "", "static rackwatch binary for that architecture")
	flag.StringVar(&o.Version, "version", "0.0.0", "version (a leading v and git-describe suffixes are made Debian-valid)")
	flag.StringVar(&o.Src, "src", "images/deb", "folder with the packaging files")
	flag.StringVar(&o.OutDir, "o", "images/out", "output folder")
	flag.Parse()
	if o.Binary == "" {
		log.Fatal("mkdeb: -binary is required")
	}
	o.Epoch = 1735689600
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		e, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			log.Fatalf("mkdeb: SOURCE_DATE_EPOCH=%q: %v", s, err)
		}
		o.Epoch = e
	}
	path, err := build(o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(path)
}
