package upsemu_test

import (
	"context"
	"fmt"

	"github.com/rackwatch/rackwatch/internal/upsemu"
)

func ExampleStart() {
	e, err := upsemu.Start(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	// e.Path() is the tty to configure as the megatec device's port.
	e.SetOnBattery(true)
	e.SetLowBattery(true)
	e.Update(func(f *upsemu.Fields) { f.InputVoltage, f.Frequency = 0, 0 })
	fmt.Printf("%q\n", e.Q1Frame())
	// Output: "(000.0 230.0 230.0 025 00.0 27.0 30.0 11001001\r"
}
