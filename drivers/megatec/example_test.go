package megatec_test

import (
	"fmt"

	"github.com/rackwatch/rackwatch/drivers/megatec"
)

func ExampleParseQ1() {
	q, err := megatec.ParseQ1([]byte("(000.0 000.0 230.0 041 00.0 21.9 33.5 11001001\r"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range q.Vars() {
		fmt.Printf("%s: %s\n", v.Name, v.Value())
	}
	// Output:
	// input.voltage: 0.0
	// input.voltage.fault: 0.0
	// output.voltage: 230.0
	// ups.load: 41
	// input.frequency: 0.0
	// battery.voltage: 21.90
	// ups.temperature: 33.5
	// ups.status: OB LB
	// ups.type: offline / line interactive
	// ups.beeper.status: enabled
}

func ExampleBatteryPacks() {
	// An online unit reports 2.26 V per cell; F says the battery is 24 V nominal.
	packs, _ := megatec.BatteryPacks(2.26, 24)
	charge, _ := megatec.BatteryCharge(2.26, packs, 24)
	fmt.Printf("%.0f cells, %.2f V, charge %.0f %%\n", packs, 2.26*packs, charge)
	// Output: 12 cells, 27.12 V, charge 100 %
}
