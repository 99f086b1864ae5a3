package bme280_test

import (
	"fmt"

	"github.com/rackwatch/rackwatch/drivers/bme280"
)

func ExampleCalibration_Compensate() {
	// The calibration and raw values of the capture in testdata/capture-0x76.txt.
	cal := bme280.Calibration{
		T1: 28176, T2: 26220, T3: 50,
		P1: 38237, P2: -10824, P3: 3024, P4: 7799, P5: -99, P6: -7, P7: 9900, P8: -10230, P9: 4285,
		H1: 75, H2: 366, H3: 0, H4: 309, H5: 0, H6: 30,
	}
	m, err := cal.Compensate(bme280.Raw{T: 526700, P: 304428, H: 31350})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Temperature, m.Pressure, m.Humidity)
	// Output: 23.720°C 100.943kPa 65.3%rH
}
