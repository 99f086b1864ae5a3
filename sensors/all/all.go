// Package all registers every driver of this build; the daemon and the config checker import
// it for its side effects. Adding a driver means adding its package here.
package all

import (
	_ "github.com/rackwatch/rackwatch/sensors/sim"
)
