// Command fleet is issue 9's fleet benchmark (`make fleet N=500`): it runs N whole sites in
// this one process (site.Run, the daemon as a library), each with its own MQTT client, sim
// devices, web server on 127.0.0.1:0 and data dir, against one mosquitto it starts itself, and
// measures: the time until all N have said `online` (retained R/state), the messages per second
// the broker delivers to one subscriber of rackwatch/#, and, after the broker is restarted,
// how the reconnects spread out in time (the uplink's backoff jitter) and whether any
// telemetry or incident `seq` went missing. Targets: all online ≤ 10 s; no gap.
//
// With -broker nats (`make fleet-nats`) the broker is a three-node nats-server cluster with
// MQTT and JetStream instead (nats.go): every site lists all three nodes, one node is killed
// mid-run and started again.
//
// It imports the daemon's site package and the sensor drivers; nothing imports it.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/site"
	_ "github.com/rackwatch/rackwatch/sensors/all"
	"github.com/rackwatch/rackwatch/uplink"
)

func main() {
	n := flag.Int("n", 500, "sites to run")
	telemetry := flag.Duration("telemetry", 2*time.Second, "each site's telemetry_interval")
	measure := flag.Duration("measure", 10*time.Second, "how long to count messages once all are online")
	down := flag.Duration("down", 5*time.Second, "how long the broker stays down")
	kind := flag.String("broker", "mosquitto", "mosquitto (one broker, restarted) or nats (a three-node cluster, one node killed)")
	flag.Parse()
	var err error
	switch *kind {
	case "mosquitto":
		err = run(*n, *telemetry, *measure, *down)
	case "nats":
		err = runNATS(*n, *telemetry, *measure, *down)
	default:
		err = fmt.Errorf("-broker %q: want mosquitto or nats", *kind)
	}
	if err != nil {
		fmt.Println("fleet failed:", err)
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// broker is a mosquitto with persistence, so the subscriber's session survives its restart.
type broker struct {
	bin, conf, addr string
	cmd             *exec.Cmd
}

func startBroker(dir string) (*broker, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			return nil, fmt.Errorf("mosquitto not found (Debian package mosquitto): %w", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// mosquitto started as root drops to the user mosquitto: without write access to its
	// folder it cannot save its store, and a restart loses the subscriber's session (and with
	// it every message published before the subscriber is back), which would look like seq gaps.
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, err
	}
	b := &broker{bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest none\nmax_queued_messages 0\nmax_connections -1\n", port, dir)
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return b, b.start()
}

func (b *broker) start() error {
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", b.addr); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto does not listen on %s", b.addr)
		}
	}
}

func (b *broker) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(os.Interrupt)
	b.cmd.Wait()
	b.cmd = nil
}

// watcher is the subscriber: per node, when it came online (after a given time) and every
// telemetry and incident seq it saw.
type watcher struct {
	mu       sync.Mutex
	since    time.Time            // online messages with a ts before this are old news
	online   map[string]time.Time // node → arrival of its first fresh online
	seqs     map[string][]uint64  // node → telemetry seqs in arrival order
	iseqs    map[string][]uint64  // node → incident seqs in arrival order
	states   map[string][]string  // node → every R/state payload, with its arrival time
	byTS     bool                 // online times are the payloads' ts (the site's connect), not arrivals
	messages atomic.Int64
}

func newWatcher() *watcher {
	return &watcher{online: map[string]time.Time{}, seqs: map[string][]uint64{}, iseqs: map[string][]uint64{}, states: map[string][]string{}}
}

func (w *watcher) handle(_ mqtt.Client, m mqtt.Message) {
	w.messages.Add(1)
	now := time.Now()
	parts := strings.Split(m.Topic(), "/") // rackwatch/fleet/NODE/KIND
	if len(parts) != 4 {
		return
	}
	node, kind := parts[2], parts[3]
	var p struct {
		State string `json:"state"`
		TS    string `json:"ts"`
		Seq   uint64 `json:"seq"`
	}
	if json.Unmarshal(m.Payload(), &p) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch kind {
	case "state":
		w.states[node] = append(w.states[node], now.UTC().Format("15:04:05.000")+" "+string(m.Payload()))
		ts, err := time.Parse(time.RFC3339Nano, p.TS)
		if p.State == "online" && err == nil && !ts.Before(w.since) {
			if w.byTS {
				// The latest connect's own time: an online whose connection the broker
				// dropped before acknowledging it may still arrive, and arrival waits on
				// the watcher's own delivery, which a broker failover stalls too.
				if t0, ok := w.online[node]; !ok || ts.After(t0) {
					w.online[node] = ts
				}
			} else if _, ok := w.online[node]; !ok {
				w.online[node] = now
			}
		}
	case "telemetry":
		w.seqs[node] = append(w.seqs[node], p.Seq)
	case "incidents":
		w.iseqs[node] = append(w.iseqs[node], p.Seq)
	}
}

// reset forgets who is online; online messages stamped before since are ignored.
func (w *watcher) reset(since time.Time) {
	w.mu.Lock()
	w.since, w.online = since, map[string]time.Time{}
	w.mu.Unlock()
}

func (w *watcher) onlineTimes() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Time
	for _, t := range w.online {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// stream is what a stopped site's database says of one of its seq streams.
type stream struct {
	last   uint64   // the last seq given
	queued []uint64 // seqs still on disk, to be sent at the next start
}

// stopped is one stopped site's telemetry and incident streams.
type stopped struct{ telemetry, incidents stream }

// gaps counts, over every node, the seqs up to the last one the node used that neither arrived
// nor are still queued on the node's disk for its next start (so a lost tail counts as much as
// a hole), and the duplicates, in seqs (the watcher's telemetry or incident seqs) against
// what each site's database says (of).
func (w *watcher) gaps(name string, seqs map[string][]uint64, final map[string]stopped, of func(stopped) stream) (missing, tail, queued, dups, total int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for node, stp := range final {
		st := of(stp)
		s := seqs[node]
		seen := map[uint64]bool{}
		var hi uint64
		for _, q := range s {
			if seen[q] {
				dups++
			}
			seen[q] = true
			hi = max(hi, q)
			total++
		}
		onDisk := map[uint64]bool{}
		for _, q := range st.queued {
			onDisk[q] = true
		}
		for q := uint64(1); q <= max(hi, st.last); q++ {
			switch {
			case seen[q]:
			case onDisk[q]:
				queued++
			default:
				missing++
				if q > hi {
					tail++
				}
				if os.Getenv("FLEET_DEBUG") != "" {
					fmt.Fprintf(os.Stderr, "%s: missing %s seq %d (last used %d); arrival order %v\n", node, name, q, st.last, s)
				}
			}
		}
	}
	return missing, tail, queued, dups, total
}

// stoppedSeqs reads every stopped site's seqs from its database. Queued incidents are read
// from the uplink's bucket directly (uplink.ReadStopped lists queued telemetry only).
func stoppedSeqs(dir string, n int) (map[string]stopped, error) {
	out := map[string]stopped{}
	for i := range n {
		node := fmt.Sprintf("n%04d", i)
		db, err := bbolt.Open(filepath.Join(dir, node, "rackwatch.db"), 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", node, err)
		}
		st, err := uplink.ReadStopped(db)
		var qi []uint64
		if err == nil {
			err = db.View(func(tx *bbolt.Tx) error {
				if b := tx.Bucket([]byte("uplink.incidents")); b != nil {
					return b.ForEach(func(k, _ []byte) error {
						if len(k) == 8 {
							qi = append(qi, binary.BigEndian.Uint64(k))
						}
						return nil
					})
				}
				return nil
			})
		}
		db.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", node, err)
		}
		out[node] = stopped{
			telemetry: stream{last: st.LastTelemetry, queued: st.QueuedTelemetry},
			incidents: stream{last: st.LastIncident, queued: qi},
		}
	}
	return out, nil
}

func (w *watcher) telemetryCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.seqs {
		n += len(s)
	}
	return n
}

// onlineAndRate waits up to limit for the n sites' online, says when the last came, then
// counts the messages delivered (by via) to the subscriber over measure.
func onlineAndRate(w *watcher, n int, start time.Time, limit, measure time.Duration, via string) error {
	ok := waitFor(limit, func() bool { return len(w.onlineTimes()) >= n })
	ons := w.onlineTimes()
	if !ok {
		return fmt.Errorf("only %d of %d sites online after %v", len(ons), n, limit)
	}
	allOnline := ons[len(ons)-1].Sub(start)
	fmt.Printf("all online:        %.2f s after the first Run (%s)\n", allOnline.Seconds(), spread(ons, start))
	fmt.Printf("all_online_s=%.3f\n", allOnline.Seconds())

	m0, t0 := w.messages.Load(), time.Now()
	time.Sleep(measure)
	rate := float64(w.messages.Load()-m0) / time.Since(t0).Seconds()
	fmt.Printf("messages/s:        %.0f delivered by %s to one subscriber over %v (%.1f per site per s)\n", rate, via, measure, rate/float64(n))
	fmt.Printf("msgs_per_s=%.1f\n", rate)
	return nil
}

func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func spread(ts []time.Time, from time.Time) string {
	if len(ts) == 0 {
		return "none"
	}
	at := func(q float64) float64 { return ts[int(q*float64(len(ts)-1))].Sub(from).Seconds() }
	return fmt.Sprintf("first %.2f s, p50 %.2f s, p90 %.2f s, last %.2f s", at(0), at(0.5), at(0.9), at(1))
}

func run(n int, telemetry, measure, down time.Duration) error {
	dir, err := os.MkdirTemp("", "rackwatch-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil { // the broker's user must reach its folder
		return err
	}
	b, err := startBroker(filepath.Join(dir, "mosquitto"))
	if err != nil {
		return err
	}
	defer b.stop()
	url := "tcp://" + b.addr
	fmt.Printf("fleet: %d sites, telemetry every %v, mosquitto on %s\n", n, telemetry, b.addr)

	w := newWatcher()
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("fleet-watcher").
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetOrderMatters(false).SetDefaultPublishHandler(w.handle).
		SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe("rackwatch/fleet/#", 1, w.handle) }))
	if t := sub.Connect(); t.Wait() && t.Error() != nil {
		return fmt.Errorf("subscriber: %w", t.Error())
	}
	defer sub.Disconnect(250)
	time.Sleep(200 * time.Millisecond) // the SUBSCRIBE from the connect handler

	f := &fleet{dir: dir, n: n}
	start := time.Now()
	w.reset(start.Add(-time.Second))
	if err := f.start(telemetry, func(int) []string { return []string{url} }); err != nil {
		return err
	}
	defer f.stop()

	if err := onlineAndRate(w, n, start, 60*time.Second, measure, "the broker"); err != nil {
		return err
	}

	// Broker restart: the sites queue on disk while it is down, then reconnect on their own.
	before := w.telemetryCount()
	b.stop()
	stoppedAt := time.Now()
	time.Sleep(down)
	restartAt := time.Now()
	w.reset(restartAt)
	if err := b.start(); err != nil {
		return err
	}
	ok := waitFor(5*time.Minute, func() bool { return len(w.onlineTimes()) >= n })
	ons := w.onlineTimes()
	fmt.Printf("broker restart:    down %.1f s; %d of %d sites back online: %s after it came back\n",
		restartAt.Sub(stoppedAt).Seconds(), len(ons), n, spread(ons, restartAt))
	if !ok {
		return fmt.Errorf("only %d of %d sites back after 5 min", len(ons), n)
	}
	at := func(q float64) float64 { return ons[int(q*float64(len(ons)-1))].Sub(restartAt).Seconds() }
	fmt.Printf("reconnect_first_s=%.3f\nreconnect_p50_s=%.3f\nreconnect_last_s=%.3f\n", at(0), at(0.5), at(1))
	// Let every site publish some more, then stop them all: their last telemetry is queued
	// and flushed before Run returns.
	waitFor(2*time.Minute, func() bool { return w.telemetryCount() > before+2*n })
	return f.finish(w)
}

// fleet is N sites running in this process.
type fleet struct {
	dir    string
	n      int
	cancel context.CancelFunc
	wg     sync.WaitGroup
	failed atomic.Int64
}

// start starts every site; brokers gives site i's mqtt.brokers. The inlet's temperature
// crosses the rule's threshold every minute, so each site opens and resolves incidents.
func (f *fleet) start(telemetry time.Duration, brokers func(i int) []string) error {
	level := slog.LevelError
	if os.Getenv("FLEET_DEBUG") != "" {
		level = slog.LevelDebug
	} else if os.Getenv("FLEET_LOG") == "info" {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	for i := range f.n {
		node := fmt.Sprintf("n%04d", i)
		bs, _ := json.Marshal(brokers(i))
		cfg, err := config.Parse(node+".yaml", fmt.Appendf(nil, `site: fleet
node: %s
data_dir: %s
web: {listen: "127.0.0.1:0"}
mqtt: {brokers: %s, telemetry_interval: %s}
devices:
  - {id: ups1, driver: sim.ups, poll: 2s}
  - id: inlet
    driver: sim.env
    poll: 2s
    loop: true
    script:
      - {at: 20s, set: {temperature: 35}}
      - {at: 40s, set: {temperature: 23}}
      - {at: 60s}
  - {id: door, driver: sim.contact, poll: 2s}
rules:
  - {name: inlet-hot, device: inlet, metric: temperature, warn_above: 30}
`, node, filepath.Join(f.dir, node), bs, telemetry))
		if err != nil {
			f.stop()
			return err
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := site.Run(ctx, cfg, site.Options{Version: "fleet", Log: log.With("node", node)}); err != nil {
				f.failed.Add(1)
				log.Error("site stopped", "node", node, "err", err)
			}
		}()
	}
	return nil
}

// stop stops every site and waits for them; their last messages are queued on disk.
func (f *fleet) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

// finish stops every site, waits until the subscriber has had everything they sent, and
// checks the telemetry and incident seqs against the sites' databases.
func (f *fleet) finish(w *watcher) error {
	f.stop()
	total := w.telemetryCount()
	waitFor(30*time.Second, func() bool {
		time.Sleep(time.Second)
		t := w.telemetryCount()
		defer func() { total = t }()
		return t == total
	})
	final, err := stoppedSeqs(f.dir, f.n)
	if err != nil {
		return err
	}
	missing, tail, queued, dups, seen := w.gaps("telemetry", w.seqs, final, func(s stopped) stream { return s.telemetry })
	fmt.Printf("seq check:         %d telemetry messages from %d sites, %d seq missing (%d after the highest seen), %d still queued on disk for the next start, %d duplicates\n", seen, f.n, missing, tail, queued, dups)
	fmt.Printf("seq_missing=%d\nseq_missing_tail=%d\nseq_queued_at_stop=%d\nseq_duplicates=%d\n", missing, tail, queued, dups)
	imissing, itail, iqueued, idups, iseen := w.gaps("incident", w.iseqs, final, func(s stopped) stream { return s.incidents })
	fmt.Printf("incident check:    %d incident messages from %d sites, %d seq missing (%d after the highest seen), %d still queued on disk for the next start, %d duplicates\n", iseen, f.n, imissing, itail, iqueued, idups)
	fmt.Printf("incidents_seen=%d\nincident_seq_missing=%d\nincident_seq_missing_tail=%d\nincident_seq_queued_at_stop=%d\nincident_seq_duplicates=%d\n", iseen, imissing, itail, iqueued, idups)
	if n := f.failed.Load(); n > 0 {
		return fmt.Errorf("%d sites stopped with an error", n)
	}
	if missing > 0 || imissing > 0 {
		return fmt.Errorf("%d telemetry and %d incident seqs missing", missing, imissing)
	}
	return nil
}
