// Package all registers every driver of this build; the daemon and the config checker import
// it for its side effects. Adding a driver means adding its package here.
package all

import (
	_ "github.com/rackwatch/rackwatch/sensors/bme280"
	_ "github.com/rackwatch/rackwatch/sensors/contact"
	_ "github.com/rackwatch/rackwatch/sensors/ina219"
	_ "github.com/rackwatch/rackwatch/sensors/megatec"
	_ "github.com/rackwatch/rackwatch/sensors/modbus"
	_ "github.com/rackwatch/rackwatch/sensors/relay"
	_ "github.com/rackwatch/rackwatch/sensors/sht3x"
	_ "github.com/rackwatch/rackwatch/sensors/sim"
	_ "github.com/rackwatch/rackwatch/sensors/snmp"
	_ "github.com/rackwatch/rackwatch/sensors/upsmib"
)
