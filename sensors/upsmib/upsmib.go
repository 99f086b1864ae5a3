// Package upsmib is the `upsmib` device: a UPS read over SNMP through the standard UPS-MIB
// of RFC 1628 (1.3.6.1.2.1.33), which nearly every UPS network card implements next to its
// vendor MIB. Readings carry NUT's variable names, mapped as NUT's snmp-ups driver maps this
// MIB (drivers/ietf-mib.c): ups.status from upsOutputSource and upsBatteryStatus,
// battery.runtime in seconds from upsEstimatedMinutesRemaining, battery.voltage from 0.1 V
// units, input.frequency from 0.1 Hz units, and upsBatteryTemperature as
// battery.temperature (NUT's name for it; this MIB has no other temperature, so there is no
// ups.temperature for a upsmib device).
//
// Everything is read in one GET per poll. Where this driver departs from a literal reading of
// the MIB it does so because real cards send sentinels and odd scales (see the walks in
// testdata/ and the judgements in sanitize.go): a value that cannot be true is an error
// reading, never a number that a rule or the power policy would act on.
//
// It must not import daemon/ or uplink/.
package upsmib

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	snmpdrv "github.com/rackwatch/rackwatch/drivers/snmp"
	"github.com/rackwatch/rackwatch/sensors"
	snmpdev "github.com/rackwatch/rackwatch/sensors/snmp"
)

// UPS-MIB objects (RFC 1628 §4). Line-indexed objects are read for line 1, except the output
// load, read for lines 1 to 3.
const (
	prefix = "1.3.6.1.2.1.33.1."

	oidMfr             = prefix + "1.1.0" // upsIdentManufacturer
	oidModel           = prefix + "1.2.0" // upsIdentModel
	oidBatteryStatus   = prefix + "2.1.0" // 1 unknown, 2 normal, 3 low, 4 depleted
	oidSecondsOnBatt   = prefix + "2.2.0"
	oidMinutesRemain   = prefix + "2.3.0"
	oidChargeRemain    = prefix + "2.4.0"
	oidBatteryVoltage  = prefix + "2.5.0"        // 0.1 V DC
	oidBatteryTemp     = prefix + "2.7.0"        // °C
	oidInputFrequency  = prefix + "3.3.1.2.1"    // 0.1 Hz
	oidInputVoltage    = prefix + "3.3.1.3.1"    // V RMS
	oidOutputSource    = prefix + "4.1.0"        // 1 other … 7 reducer
	oidOutputVoltage   = prefix + "4.4.1.2.1"    // V RMS
	oidOutputLoadLine  = prefix + "4.4.1.5."     // + line: %
	oidAlarmsPresent   = prefix + "6.1.0"        // Gauge32
	oidAlarmDescrTable = prefix + "6.2.1.2"      // upsAlarmDescr: a well-known alarm OID per row
	outputLines        = 3                       // output load is read for lines 1..3
	unknownGauge32     = float64(math.MaxUint32) // -1 sent as an unsigned Gauge32
)

// OIDs is every object one poll GETs, in one request.
var OIDs = func() []string {
	o := []string{
		oidMfr, oidModel, oidBatteryStatus, oidSecondsOnBatt, oidMinutesRemain, oidChargeRemain,
		oidBatteryVoltage, oidBatteryTemp, oidInputFrequency, oidInputVoltage, oidOutputSource,
		oidOutputVoltage, oidAlarmsPresent,
	}
	for l := 1; l <= outputLines; l++ {
		o = append(o, fmt.Sprintf("%s%d", oidOutputLoadLine, l))
	}
	return o
}()

// Metrics are the readings a upsmib device can give, with their units.
var Metrics = map[string]string{
	"ups.status": "", "ups.mfr": "", "ups.model": "", "ups.load": "%",
	"ups.alarm": "", "ups.alarm.count": "",
	"battery.charge": "%", "battery.runtime": "s", "battery.runtime.elapsed": "s",
	"battery.voltage": "V", "battery.temperature": "°C",
	"input.voltage": "V", "input.frequency": "Hz", "output.voltage": "V",
}

// Alarms names the well-known alarms of RFC 1628 (upsWellKnownAlarms, 1.3.6.1.2.1.33.1.6.3.N)
// by N, without their "upsAlarm" prefix.
var Alarms = snmpdrv.UPSAlarms

func init() {
	sensors.Register(sensors.Driver{
		Name:     "upsmib",
		Class:    sensors.ClassUPS,
		Options:  Options{},
		Required: []string{"target"},
		Metrics:  Metrics,
		New:      func(spec sensors.Spec, env sensors.Env) (sensors.Device, error) { return New(spec) },
		Check:    func(spec sensors.Spec) error { return snmpdev.CheckAgent(sensors.Opts[Options](spec)) },
	})
}

// Options are a upsmib device's keys: the agent's, as for a generic snmp device.
type Options = snmpdev.Agent

// Device is one UPS read over the UPS-MIB.
type Device struct {
	id     string
	client *snmpdrv.Client
}

// New makes a upsmib device from its spec (target, community, version, v3).
func New(spec sensors.Spec) (*Device, error) {
	cfg, err := snmpdev.ClientConfig(sensors.Opts[Options](spec))
	if err != nil {
		return nil, fmt.Errorf("upsmib: %w", err)
	}
	c, err := snmpdrv.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("upsmib: %w", err)
	}
	return &Device{id: spec.ID, client: c}, nil
}

// Poll reads the UPS in one GET; when the UPS reports alarms it also walks the (short) alarm
// table to name them.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	vals, err := d.client.Get(ctx, OIDs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.id, err)
	}
	var alarms []int
	alarmsOK := true
	if n, ok := alarmCount(vals); ok && n > 0 {
		rows, err := d.client.Walk(ctx, oidAlarmDescrTable)
		if err != nil {
			alarmsOK = false // the GET worked: only ups.alarm is unknown this time
		} else {
			alarms = alarmIDs(rows)
		}
	}
	return Readings(d.id, vals, alarms, alarmsOK, time.Now()), nil
}

// Close releases the socket.
func (d *Device) Close() error { return d.client.Close() }

// alarmIDs picks the well-known alarm numbers out of upsAlarmDescr rows.
func alarmIDs(rows []snmpdrv.Value) []int {
	var ids []int
	for _, r := range rows {
		if r.Missing {
			continue
		}
		if n, _, ok := snmpdrv.UPSAlarm(r.Text); ok {
			ids = append(ids, n)
		}
	}
	return ids
}

// Readings turns one GET's answer (and the alarm ids, when alarms were walked) into readings.
// It is the whole mapping from the MIB to NUT's names, kept free of I/O so that every real
// walk can be checked against it.
func Readings(id string, vals map[string]snmpdrv.Value, alarms []int, alarmsOK bool, ts time.Time) []sensors.Reading {
	var out []sensors.Reading
	num := func(metric string, v float64, ok bool) {
		if ok {
			out = append(out, sensors.Num(id, metric, v, Metrics[metric], ts))
		} else {
			out = append(out, sensors.Failed(id, metric, Metrics[metric], ts))
		}
	}
	// optional metrics are left out when the agent does not have the object at all: many
	// cards do not implement them, and a reading that is an error forever helps nobody.
	optional := func(metric, oid string, f func(snmpdrv.Value) (float64, bool)) {
		v, has := vals[oid]
		if !has || v.Missing {
			return
		}
		x, ok := f(v)
		num(metric, x, ok)
	}
	text := func(metric, oid string) {
		if v, ok := vals[oid]; ok && !v.Missing && strings.TrimSpace(v.Text) != "" {
			out = append(out, sensors.Text(id, metric, strings.TrimSpace(v.Text), ts))
		}
	}

	status, statusOK := upsStatus(vals, alarms)
	if statusOK {
		out = append(out, sensors.Text(id, "ups.status", status, ts))
	} else {
		out = append(out, sensors.Failed(id, "ups.status", "", ts))
	}
	onBattery := strings.Contains(" "+status+" ", " OB ")

	charge, chargeOK := batteryCharge(vals[oidChargeRemain])
	num("battery.charge", charge, chargeOK)
	rt, rtOK := runtime(vals[oidMinutesRemain], onBattery, charge, chargeOK)
	num("battery.runtime", rt, rtOK)
	bv, bvOK := batteryVoltage(vals[oidBatteryVoltage])
	num("battery.voltage", bv, bvOK)
	iv, ivOK := acVoltage(vals[oidInputVoltage])
	num("input.voltage", iv, ivOK)
	ov, ovOK := acVoltage(vals[oidOutputVoltage])
	num("output.voltage", ov, ovOK)
	load, loadOK := outputLoad(vals)
	num("ups.load", load, loadOK)

	optional("battery.temperature", oidBatteryTemp, batteryTemperature)
	optional("input.frequency", oidInputFrequency, frequency)
	optional("battery.runtime.elapsed", oidSecondsOnBatt, secondsOnBattery)

	if n, has := alarmCount(vals); has {
		num("ups.alarm.count", n, true)
		switch {
		case n == 0:
			// An empty ups.alarm says "no alarm" explicitly, so that a cleared alarm does
			// not linger as a stale value.
			out = append(out, sensors.Text(id, "ups.alarm", "", ts))
		case !alarmsOK:
			out = append(out, sensors.Failed(id, "ups.alarm", "", ts))
		default:
			out = append(out, sensors.Text(id, "ups.alarm", alarmText(alarms, n), ts))
		}
	}
	text("ups.mfr", oidMfr)
	text("ups.model", oidModel)
	return out
}

// alarmText names the alarms; alarms not in the well-known list (vendor OIDs) are counted.
func alarmText(ids []int, count float64) string {
	var names []string
	for _, n := range ids {
		if name, ok := Alarms[n]; ok {
			names = append(names, name)
		}
	}
	if other := int(count) - len(names); other > 0 {
		names = append(names, fmt.Sprintf("%d other alarm(s)", other))
	}
	return strings.Join(names, " ")
}
