package ina219_test

import (
	"fmt"

	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/rackwatch/rackwatch/drivers/ina219"
)

func ExampleDev_Sense() {
	// The datasheet's Table 3 example on a recorded bus: 2 mΩ shunt, Current_LSB 1 mA.
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x40, W: []byte{0x00, 0x29, 0x9F}},
		{Addr: 0x40, W: []byte{0x05, 0x50, 0x00}},
		{Addr: 0x40, W: []byte{0x05}, R: []byte{0x50, 0x00}},
		{Addr: 0x40, W: []byte{0x02}, R: []byte{0x5D, 0x98}},
		{Addr: 0x40, W: []byte{0x01}, R: []byte{0x07, 0xD0}},
		{Addr: 0x40, W: []byte{0x04}, R: []byte{0x27, 0x10}},
		{Addr: 0x40, W: []byte{0x03}, R: []byte{0x17, 0x66}},
	}}
	d, err := ina219.New(bus, 0x40, ina219.Opts{ShuntResistance: 2 * physic.MilliOhm, MaxCurrent: 32768 * physic.MilliAmpere})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := d.Sense()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.BusVoltage, m.ShuntVoltage, m.Current, m.Power)
	// Output: 11.980V 20mV 10A 119.800W
}
