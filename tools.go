//go:build tools

// Package tools pins the modules the project uses before every package imports them, so that
// parallel work does not fight over go.mod.
package tools

import (
	_ "github.com/cavaliergopher/cpio"
	_ "github.com/chromedp/chromedp"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/creack/pty"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/gokrazy/kernel.arm64"
	_ "github.com/gosnmp/gosnmp"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/tarm/serial"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/crypto/bcrypt"
	_ "periph.io/x/conn/v3/gpio/gpiotest"
	_ "periph.io/x/conn/v3/i2c/i2ctest"
	_ "periph.io/x/conn/v3/physic"
	_ "periph.io/x/host/v3"
)
