package sht3x_test

import (
	"context"
	"fmt"

	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"

	"github.com/rackwatch/rackwatch/drivers/sht3x"
)

func ExampleDev_Sense() {
	// On a board the bus is i2creg.Open("1") (periph.io/x/host/v3); here a recorded exchange
	// stands in for it.
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0x30, 0x66}},
		{Addr: 0x44, W: []byte{0x24, 0x00}},
		{Addr: 0x44, R: []byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xa2}},
	}}
	d, err := sht3x.New(bus, sht3x.AddrLow)
	if err != nil {
		fmt.Println(err)
		return
	}
	t, h, err := d.Sense(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%.2f °C, %.2f %%RH\n", t.Celsius(), float64(h)/float64(physic.PercentRH))
	// Output: 25.00 °C, 50.00 %RH
}
