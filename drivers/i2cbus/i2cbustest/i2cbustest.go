// Package i2cbustest is what the tests of every I²C chip device share: the scripted buses
// (periph's i2ctest.Playback) handed to the device as its i2cbus.Open, one per open, and the
// hex of the captures they replay.
//
// It is for tests only, and knows buses, not chips or readings: it must not import sensors/,
// daemon/ or uplink/.
package i2cbustest

import (
	"encoding/hex"
	"errors"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// Buses hands out List in turn, one playback per open, and counts the opens. An open past
// the end of List fails as a missing /dev/i2c-N does; a test may append to List between polls
// to make the bus appear.
type Buses struct {
	List  []*i2ctest.Playback
	Opens int
}

// Open is an i2cbus.Open.
func (b *Buses) Open() (i2c.BusCloser, error) {
	b.Opens++
	if b.Opens > len(b.List) {
		return nil, errors.New("no such bus")
	}
	return b.List[b.Opens-1], nil
}

// Hex decodes the hex of a captured frame. It panics on bad hex: that is a typo in the test.
func Hex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
