// Package megatec is the `megatec` device: a UPS on a serial line speaking the Megatec/Q1
// protocol (drivers/megatec), read at 2400 baud 8N1 through github.com/tarm/serial. Readings
// carry NUT's variable names with the values NUT's nutdrv_qx (protocol megatec) gives, so
// that rackwatch and upsc agree on a UPS (the differential test here runs both on one
// emulated UPS).
//
// Every poll sends Q1. F (ratings) and I (identity) are asked at the first poll and then
// every RefreshStatic, or every minute while the UPS does not answer them; their values are
// repeated in every poll's readings.
//
// Battery: battery.voltage is the voltage of the whole battery. Units that send a per-cell
// (S.SS) or per-block value have it multiplied by the number of cells or blocks, found from
// battery.voltage.nominal as nutdrv_qx finds it (BatteryPacks); until F has given the
// nominal voltage, or when no multiplier fits, the value is as the UPS sent it. (upsc shows
// the unmultiplied value unless nutdrv_qx runs with battery_voltage_reports_one_pack.)
// battery.charge is nutdrv_qx's guesstimate from that voltage (BatteryCharge), given only once
// the nominal voltage is known: a rough figure, as it is in NUT.
//
// ups.alarm is always given, "" when there is no alarm (NUT deletes the variable then), so a
// cleared alarm does not linger as a stale value.
//
// The port is closed after any failed exchange and opened again at the next poll, so a
// USB-serial adapter that was unplugged and came back is picked up. It must not import
// daemon/ or uplink/.
package megatec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tarm/serial"

	drv "github.com/rackwatch/rackwatch/drivers/megatec"
	"github.com/rackwatch/rackwatch/sensors"
)

// DefaultBaud is the Megatec line speed.
const DefaultBaud = 2400

// RefreshStatic is how often F and I are asked again once answered.
const RefreshStatic = 5 * time.Minute

// retryStatic is how soon F or I are asked again after they failed.
const retryStatic = time.Minute

// readTick is the serial read timeout: how often a blocked read returns so the reply
// deadline can be checked, and the quiet gap that ends a reply sent without its CR.
const readTick = 100 * time.Millisecond

// commandWait is how long a command waits for a refusal (an echo or NAK; nutdrv_qx waits a
// second for any reply). An echo of a few bytes takes under 50 ms at 2400 baud.
var commandWait = 500 * time.Millisecond

// Metrics are the readings a megatec device gives, with their units.
var Metrics = map[string]string{
	"ups.status": "", "ups.alarm": "", "ups.type": "", "ups.beeper.status": "",
	"input.voltage": "V", "input.voltage.fault": "V", "output.voltage": "V", "ups.load": "%",
	"input.frequency": "Hz", "battery.voltage": "V", "battery.charge": "%", "ups.temperature": "°C",
	"input.voltage.nominal": "V", "input.current.nominal": "A", "battery.voltage.nominal": "V",
	"input.frequency.nominal": "Hz", "device.mfr": "", "device.model": "", "ups.firmware": "",
}

// q1Metrics are the metrics each Q1 gives: an error reading each when Q1 fails.
var q1Metrics = []string{"input.voltage", "input.voltage.fault", "output.voltage", "ups.load",
	"input.frequency", "battery.voltage", "ups.temperature", "ups.status", "ups.alarm",
	"ups.type", "ups.beeper.status"}

var bauds = map[int]bool{1200: true, 2400: true, 4800: true, 9600: true, 19200: true, 38400: true, 57600: true, 115200: true}

func init() {
	sensors.Register(sensors.Driver{
		Name:     "megatec",
		Class:    sensors.ClassUPS,
		Options:  Options{},
		Required: []string{"port"},
		Metrics:  Metrics,
		New:      func(spec sensors.Spec, _ sensors.Env) (sensors.Device, error) { return New(spec) },
		// New opens nothing (the port is opened at the first poll): it checks the spec.
		Check: func(spec sensors.Spec) error { _, err := New(spec); return err },
	})
}

// Options are a megatec device's keys.
type Options struct {
	Port string `yaml:"port"` // the serial device, e.g. /dev/ttyUSB0
	Baud int    `yaml:"baud"` // default DefaultBaud
}

// Device is one megatec UPS. Poll and Command may be called from different goroutines; one
// exchange with the UPS happens at a time.
type Device struct {
	id   string
	port string
	baud int
	log  *slog.Logger

	mu         sync.Mutex
	sp         io.ReadWriteCloser
	conn       *drv.Conn
	ratings    *drv.Ratings
	info       *drv.Info
	nextF      time.Time
	nextI      time.Time
	packs      float64 // 0 until found
	lastErr    string
	lastLogged time.Time
}

// New makes a device from its spec; the port is opened at the first poll.
func New(spec sensors.Spec) (*Device, error) {
	o := sensors.Opts[Options](spec)
	if o.Port == "" {
		return nil, errors.New("megatec: port is required")
	}
	baud := o.Baud
	if baud == 0 {
		baud = DefaultBaud
	}
	if !bauds[baud] {
		return nil, &sensors.KeyError{Key: "baud", Err: fmt.Errorf("megatec: baud %d is not a serial speed (1200 … 115200)", o.Baud)}
	}
	return &Device{
		id: spec.ID, port: o.Port, baud: baud,
		log: slog.Default().With("device", spec.ID, "driver", "megatec", "port", o.Port),
	}, nil
}

func (d *Device) openLocked() error {
	if d.sp != nil {
		return nil
	}
	p, err := serial.OpenPort(&serial.Config{
		Name: d.port, Baud: d.baud, Size: 8, Parity: serial.ParityNone, StopBits: serial.Stop1,
		ReadTimeout: readTick,
	})
	switch {
	case errors.Is(err, syscall.ENOTTY):
		// Not a tty: a virtio-serial port (/dev/vportNpM, how a QEMU guest reaches the
		// host's UPS) or another byte pipe, which has no line settings to make.
		f, ferr := openPlain(d.port)
		if ferr != nil {
			return fmt.Errorf("%s: open %s: %w", d.id, d.port, ferr)
		}
		d.sp = f
	case err != nil:
		return fmt.Errorf("%s: open %s: %w", d.id, d.port, err)
	default:
		d.sp = p
	}
	d.conn = drv.NewConn(d.sp)
	return nil
}

// plainPort is a character device that is not a tty, read through Go's poller so that
// read deadlines work.
type plainPort struct{ *os.File }

func openPlain(name string) (*plainPort, error) {
	f, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return &plainPort{f}, nil
}

// Flush drops what arrived before the command is sent (a late reply to an earlier one), as
// tarm/serial's Flush does for a tty.
func (p *plainPort) Flush() error {
	buf := make([]byte, 256)
	for i := 0; i < 64; i++ {
		if err := p.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
			return nil // no deadlines: nothing can be drained without blocking
		}
		n, err := p.Read(buf)
		if n == 0 || err != nil {
			break
		}
	}
	return p.SetReadDeadline(time.Time{})
}

func (d *Device) closeLocked() {
	if d.sp != nil {
		d.sp.Close()
		d.sp, d.conn = nil, nil
	}
}

// Close releases the port.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	return nil
}

// report logs a failure, once per distinct error and then at most once a minute while it
// repeats, so a dead line does not flood the log; and logs the recovery.
func (d *Device) report(err error) {
	now := time.Now()
	if err == nil {
		if d.lastErr != "" {
			d.log.Info("UPS answers again")
		}
		d.lastErr = ""
		return
	}
	if msg := err.Error(); msg != d.lastErr || now.Sub(d.lastLogged) >= time.Minute {
		d.log.Warn("poll failed", "err", err)
		d.lastErr, d.lastLogged = msg, now
	}
}

// Poll asks Q1 (and F and I when due) and returns the readings.
func (d *Device) Poll(ctx context.Context) ([]sensors.Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	q, err := d.pollQ1Locked(ctx)
	if err != nil {
		d.report(err)
		return append(sensors.FailedAll(d.id, q1Metrics, Metrics, now), d.staticReadings(now)...), err
	}
	d.refreshStaticLocked(ctx, now)
	if !q.StatusOK() {
		// The numbers are good; the status is not. Say so, without failing the device.
		d.report(fmt.Errorf("%s: Q1 status field has %d of 8 bits (%s): status unknown", d.id, q.StatusBits, q.Status))
	} else {
		d.report(nil)
	}
	return append(d.q1Readings(q, now), d.staticReadings(now)...), nil
}

func (d *Device) pollQ1Locked(ctx context.Context) (drv.Q1, error) {
	if err := d.openLocked(); err != nil {
		return drv.Q1{}, err
	}
	q, err := d.conn.Q1(ctx)
	if err != nil {
		d.closeLocked()
		return q, fmt.Errorf("%s: %w", d.id, err)
	}
	return q, nil
}

// staticWait bounds the wait for an F or I reply (nutdrv_qx waits a second): a unit that
// ignores I must not hold the poll, whose status reading is already in hand, to its deadline.
const staticWait = time.Second

// refreshStaticLocked asks F and I when due, within what is left of the poll's time. Their
// failures are logged but do not fail the poll: the status is what matters.
func (d *Device) refreshStaticLocked(ctx context.Context, now time.Time) {
	if d.conn == nil {
		return
	}
	wait := staticWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/3)
	}
	if !now.Before(d.nextF) && ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, wait)
		r, err := d.conn.Ratings(fctx)
		cancel()
		if err != nil {
			d.log.Info("no ratings (F) from the UPS", "err", err)
			d.nextF = now.Add(retryStatic)
		} else {
			d.ratings = &r
			d.nextF = now.Add(RefreshStatic)
		}
	}
	if !now.Before(d.nextI) && ctx.Err() == nil {
		ictx, cancel := context.WithTimeout(ctx, wait)
		in, err := d.conn.Info(ictx)
		cancel()
		if err != nil {
			d.log.Info("no identity (I) from the UPS", "err", err)
			d.nextI = now.Add(retryStatic)
		} else {
			d.info = &in
			d.nextI = now.Add(RefreshStatic)
		}
	}
}

func reading(id string, v drv.Var, ts time.Time) sensors.Reading {
	switch {
	case v.Err != nil:
		r := sensors.Failed(id, v.Name, v.Unit, ts)
		r.IsText = v.IsText
		return r
	case v.IsText:
		return sensors.Text(id, v.Name, v.Text, ts)
	}
	return sensors.Num(id, v.Name, v.Num, v.Unit, ts)
}

func (d *Device) q1Readings(q drv.Q1, now time.Time) []sensors.Reading {
	rs := make([]sensors.Reading, 0, len(Metrics))
	hasAlarm := false
	for _, v := range q.Vars() {
		if v.Name == "battery.voltage" && v.Err == nil {
			v.Num = d.batteryVoltage(v.Num)
		}
		if v.Name == "ups.alarm" {
			hasAlarm = true
		}
		rs = append(rs, reading(d.id, v, now))
	}
	if !hasAlarm {
		if q.StatusOK() {
			rs = append(rs, sensors.Text(d.id, "ups.alarm", "", now))
		} else {
			r := sensors.Failed(d.id, "ups.alarm", "", now)
			r.IsText = true
			rs = append(rs, r)
		}
	}
	if d.ratings != nil && d.ratings.BatteryVoltage.OK && q.BatteryVoltage.OK && d.packs > 0 {
		if c, ok := drv.BatteryCharge(q.BatteryVoltage.V, d.packs, d.ratings.BatteryVoltage.V); ok {
			rs = append(rs, sensors.Num(d.id, "battery.charge", c, "%", now))
		}
	}
	return rs
}

// batteryVoltage turns the reported battery voltage into the whole battery's, once the
// number of cells or blocks is known (found once, from the first voltage after F, as
// nutdrv_qx finds it at start-up).
func (d *Device) batteryVoltage(reported float64) float64 {
	if d.packs == 0 && d.ratings != nil && d.ratings.BatteryVoltage.OK {
		if p, ok := drv.BatteryPacks(reported, d.ratings.BatteryVoltage.V); ok {
			d.packs = p
			if p != 1 {
				d.log.Info("battery voltage is per cell or block", "multiplier", p, "nominal", d.ratings.BatteryVoltage.V)
			}
		}
	}
	if d.packs > 0 {
		// Round as nutdrv_qx prints battery.voltage (%.2f), so 2.26 × 12 is 27.12, not 27.119999.
		return math.Round(reported*d.packs*100) / 100
	}
	return reported
}

func (d *Device) staticReadings(now time.Time) []sensors.Reading {
	var rs []sensors.Reading
	if d.ratings != nil {
		for _, v := range d.ratings.Vars() {
			if v.Err == nil {
				rs = append(rs, reading(d.id, v, now))
			}
		}
	}
	if d.info != nil {
		for _, v := range d.info.Vars() {
			rs = append(rs, reading(d.id, v, now))
		}
	}
	return rs
}

// Commands lists the NUT instant commands the UPS takes.
func (d *Device) Commands() []string { return drv.Commands() }

// Command sends a NUT instant command (see drivers/megatec.CommandString for arg).
func (d *Device) Command(ctx context.Context, cmd, arg string) error {
	if _, err := drv.CommandString(cmd, arg); err != nil {
		return fmt.Errorf("%s: %w", d.id, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.openLocked(); err != nil {
		return err
	}
	err := d.conn.Command(ctx, cmd, arg, commandWait)
	if err != nil {
		// A refusal is an answer; anything else leaves the line in doubt: reopen it.
		if !errors.Is(err, drv.ErrEcho) && !errors.Is(err, drv.ErrNAK) {
			d.closeLocked()
		}
		return fmt.Errorf("%s: %w", d.id, err)
	}
	d.log.Info("instant command sent", "cmd", cmd, "arg", arg)
	return nil
}

var (
	_ sensors.Device    = (*Device)(nil)
	_ sensors.Commander = (*Device)(nil)
)
