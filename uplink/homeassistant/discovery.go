// Package homeassistant publishes Home Assistant MQTT discovery configs for a site's
// readings, so that an HA instance on the same broker shows every device and reading with no
// configuration of its own: retained `<prefix>/<component>/<node_id>/<object_id>/config`
// messages whose entities read the telemetry rackwatch already publishes on R/telemetry
// (with JSON value templates), are available while R/state says online, and switch relays
// through R/cmd.
//
// Readings are learned from telemetry (a driver may not know its metrics before it polls),
// and what was published is kept in the database, so that a restart publishes the same set
// at once and a config that drops a device, a reading, or Home Assistant itself clears what
// it published before (an empty retained config makes HA remove the entity).
//
// It knows the uplink only through uplink.Session and uplink.Reading; it must not import
// daemon/ or sensors/.
package homeassistant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/uplink"
)

// DefaultPrefix is Home Assistant's default discovery prefix.
const DefaultPrefix = "homeassistant"

// MaxEntities bounds the entities published for one site; readings past it are counted in
// Stats().Dropped and get none.
const MaxEntities = 1000

// maxStale bounds the configs kept to be cleared (entities that went away while no broker
// was reachable); past it the oldest are forgotten, counted in Stats().Forgotten.
const maxStale = 4 * MaxEntities

// minResend is the least time between two full resends asked for by HA's `online`: anyone
// on the broker can publish it, and each costs one message per entity.
const minResend = 5 * time.Second

// Device is one rackwatch device as HA shows it.
type Device struct {
	ID          string
	Model       string // the driver
	Class       string // sensors.Class: ups, relay, contact, environmental, power, generator, other
	Description string
	// Fingerprint changes when the device's config does: its readings are then learned
	// again from its next telemetry, and those it no longer has are cleared.
	Fingerprint string
}

// Site is what Set takes: whether discovery is on, and what to describe.
type Site struct {
	Enabled bool
	Prefix  string // discovery prefix; default DefaultPrefix
	Root    string // R: the uplink's root topic
	Site    string
	Node    string
	Version string
	Devices []Device
}

// Stats counts what the publisher left out.
type Stats struct {
	Entities  int    // entities published (or to be)
	Dropped   uint64 // readings that got no entity because of MaxEntities
	Forgotten uint64 // configs to clear that were forgotten because of maxStale
}

// entity is one learned reading.
type entity struct {
	Device string `json:"device"`
	Metric string `json:"metric"`
	Unit   string `json:"unit,omitempty"`
	Text   bool   `json:"text,omitempty"`
}

// saved is what the database keeps (bucket "homeassistant", key "state").
type saved struct {
	Topics   []string          `json:"topics"` // configs that may be retained on a broker
	Entities []entity          `json:"entities"`
	Learned  map[string]string `json:"learned"` // device → the fingerprint its entities were learned under
}

var (
	bucket = []byte("homeassistant")
	key    = []byte("state")
)

// Publisher keeps the discovery configs of one site and publishes them on every
// connection it is given (Serve). One per process: it outlives config reloads.
type Publisher struct {
	db  *bbolt.DB
	log *slog.Logger

	mu        sync.Mutex
	site      Site
	devs      map[string]Device
	ents      map[string]entity    // by device + "\x00" + metric
	learned   map[string]string    // device → fingerprint its entities were confirmed under
	pending   map[string]bool      // devices whose entities wait for their next telemetry
	ident     map[string][2]string // device → manufacturer and model it reports (ups.mfr, ups.model)
	topics    map[string]bool      // configs that may be retained on a broker (saved)
	staleAt   map[string]uint64    // of topics, those not wanted any more: when they went stale
	configs   map[string][]byte    // wanted: topic → payload
	order     []string             // of configs: the appliance first, then by topic
	lastSaved []byte
	resendReq uint64
	tick      uint64
	changed   chan struct{} // closed and replaced on every change
	dropped   uint64
	forgotten uint64
	droppedAt time.Time
}

// New reads what was published before from db.
func New(db *bbolt.DB, log *slog.Logger) (*Publisher, error) {
	if log == nil {
		log = slog.Default()
	}
	p := &Publisher{db: db, log: log.With("part", "homeassistant"), devs: map[string]Device{},
		ents: map[string]entity{}, learned: map[string]string{}, pending: map[string]bool{}, ident: map[string][2]string{},
		topics: map[string]bool{}, staleAt: map[string]uint64{}, configs: map[string][]byte{},
		changed: make(chan struct{})}
	err := db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		v := b.Get(key)
		if v == nil {
			return nil
		}
		p.lastSaved = bytes.Clone(v)
		var s saved
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("homeassistant: saved state: %w", err)
		}
		for _, t := range s.Topics {
			p.topics[t] = true
		}
		for _, e := range s.Entities {
			p.ents[e.Device+"\x00"+e.Metric] = e
		}
		for d, f := range s.Learned {
			p.learned[d] = f
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Set takes the site's config, at the start and after every reload. Devices gone lose their
// entities; devices whose config changed learn theirs again from their next telemetry.
func (p *Publisher) Set(s Site) error {
	if s.Prefix == "" {
		s.Prefix = DefaultPrefix
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.site = s
	p.devs = map[string]Device{}
	p.pending = map[string]bool{}
	if s.Enabled {
		for _, d := range s.Devices {
			p.devs[d.ID] = d
			if p.learned[d.ID] != d.Fingerprint {
				p.pending[d.ID] = true
			}
		}
	}
	for k, e := range p.ents {
		if _, ok := p.devs[e.Device]; !ok {
			delete(p.ents, k)
		}
	}
	for d := range p.learned {
		if _, ok := p.devs[d]; !ok {
			delete(p.learned, d)
		}
	}
	for d := range p.ident {
		if _, ok := p.devs[d]; !ok {
			delete(p.ident, d)
		}
	}
	return p.update()
}

// Observe learns the readings of one telemetry message. It costs a map lookup per reading
// when nothing is new.
func (p *Publisher) Observe(rs []uplink.Reading) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.site.Enabled {
		return
	}
	changed := false
	var seen map[string]map[string]bool // pending device → its metrics in rs
	for _, r := range rs {
		d, ok := p.devs[r.Device]
		if !ok {
			continue
		}
		if p.pending[d.ID] {
			if seen == nil {
				seen = map[string]map[string]bool{}
			}
			if seen[d.ID] == nil {
				seen[d.ID] = map[string]bool{}
			}
			seen[d.ID][r.Metric] = true
		}
		if v, ok := r.Value.(string); ok && identity[r.Metric] > 0 {
			id := p.ident[d.ID]
			if i := identity[r.Metric] - 1; id[i] != v && len(v) <= 64 {
				id[i] = v
				p.ident[d.ID] = id
				changed = true
			}
		}
		k := r.Device + "\x00" + r.Metric
		old, known := p.ents[k]
		e := entity{Device: r.Device, Metric: r.Metric, Unit: r.Unit}
		switch r.Value.(type) {
		case string:
			e.Text = true
		case nil:
			if !known {
				continue // a reading in error: its kind shows with its first value
			}
			e.Text = old.Text
		}
		if known && old == e {
			continue
		}
		if !known {
			_, err := jinjaString(r.Metric)
			if len(p.ents) >= MaxEntities || err != nil {
				p.dropped++
				if time.Since(p.droppedAt) > time.Hour {
					p.droppedAt = time.Now()
					p.log.Warn("a reading gets no Home Assistant entity: too many readings, or a name a template cannot hold",
						"max", MaxEntities, "device", r.Device, "metric", r.Metric)
				}
				continue
			}
		}
		p.ents[k] = e
		changed = true
	}
	for id, ms := range seen {
		for k, e := range p.ents {
			if e.Device == id && !ms[e.Metric] {
				delete(p.ents, k)
			}
		}
		p.learned[id] = p.devs[id].Fingerprint
		delete(p.pending, id)
		changed = true
	}
	if changed {
		if err := p.update(); err != nil {
			p.log.Error("discovery state not saved", "err", err)
		}
	}
}

// identity are the readings that name a device's maker (1) and model (2), as NUT names them.
var identity = map[string]int{"ups.mfr": 1, "device.mfr": 1, "ups.model": 2, "device.model": 2}

// Stats counts the entities and what was left out.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Entities: len(p.configs), Dropped: p.dropped, Forgotten: p.forgotten}
}

// update renders the configs, notes the topics that may now be retained, saves that if it
// changed, and wakes Serve. Called with p.mu held.
func (p *Publisher) update() error {
	p.configs = map[string][]byte{}
	if p.site.Enabled {
		p.render()
	}
	p.order = p.order[:0]
	for t := range p.configs {
		p.order = append(p.order, t)
	}
	app := p.applianceTopic()
	sort.Slice(p.order, func(i, j int) bool {
		if (p.order[i] == app) != (p.order[j] == app) {
			return p.order[i] == app
		}
		return p.order[i] < p.order[j]
	})
	p.tick++
	for t := range p.configs {
		p.topics[t] = true
		delete(p.staleAt, t)
	}
	for t := range p.topics {
		if _, ok := p.configs[t]; !ok {
			if _, ok := p.staleAt[t]; !ok {
				p.staleAt[t] = p.tick
			}
		}
	}
	for len(p.staleAt) > maxStale {
		oldest := ""
		for t, at := range p.staleAt {
			if oldest == "" || at < p.staleAt[oldest] || (at == p.staleAt[oldest] && t < oldest) {
				oldest = t
			}
		}
		delete(p.staleAt, oldest)
		delete(p.topics, oldest)
		p.forgotten++
	}
	p.wake()
	return p.save()
}

func (p *Publisher) wake() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// save writes the state when it differs from what the database has. A site that never
// used discovery writes nothing.
func (p *Publisher) save() error {
	if len(p.topics) == 0 && len(p.ents) == 0 && len(p.learned) == 0 {
		if p.lastSaved == nil {
			return nil
		}
		err := p.db.Update(func(tx *bbolt.Tx) error {
			if b := tx.Bucket(bucket); b != nil {
				return b.Delete(key)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("homeassistant: save: %w", err)
		}
		p.lastSaved = nil
		return nil
	}
	s := saved{Topics: make([]string, 0, len(p.topics)), Entities: make([]entity, 0, len(p.ents)), Learned: p.learned}
	for t := range p.topics {
		s.Topics = append(s.Topics, t)
	}
	sort.Strings(s.Topics)
	for _, e := range p.ents {
		s.Entities = append(s.Entities, e)
	}
	sort.Slice(s.Entities, func(i, j int) bool {
		a, b := s.Entities[i], s.Entities[j]
		return a.Device < b.Device || a.Device == b.Device && a.Metric < b.Metric
	})
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if bytes.Equal(v, p.lastSaved) {
		return nil
	}
	err = p.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(key, v)
	})
	if err != nil {
		return fmt.Errorf("homeassistant: save: %w", err)
	}
	p.lastSaved = v
	return nil
}

// cleared notes that the retained configs of topics were cleared on the broker.
func (p *Publisher) cleared(topics []string) {
	if len(topics) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range topics {
		if _, wanted := p.configs[t]; !wanted {
			delete(p.topics, t)
			delete(p.staleAt, t)
		}
	}
	if err := p.save(); err != nil {
		p.log.Error("discovery state not saved", "err", err)
	}
}

// onStatus hears HA's birth and will messages. A retained one is what the broker kept, not
// HA coming online now: what a connection publishes first covers it.
func (p *Publisher) onStatus(_ string, payload []byte, retained bool) {
	if retained || string(payload) != "online" {
		return
	}
	p.mu.Lock()
	p.resendReq++
	p.wake()
	p.mu.Unlock()
}

// Serve publishes the configs on one connection until ctx ends: all of them when it starts
// and when HA announces itself online (no more often than minResend), what changed after a
// Set or a new reading, and an empty retained config for each one not wanted any more.
// Nothing is published while nothing changes.
func (p *Publisher) Serve(ctx context.Context, s *uplink.Session) {
	var (
		sent       = map[string][]byte{} // what this connection published
		subscribed string
		resendSeen uint64
		lastFull   = time.Now()
		timer      *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	p.mu.Lock()
	resendSeen = p.resendReq
	p.mu.Unlock()
	for {
		p.mu.Lock()
		changed := p.changed
		status := ""
		if p.site.Enabled {
			status = p.site.Prefix + "/status"
		}
		order := slices.Clone(p.order)
		configs := p.configs // replaced, never modified, by update
		var stale []string
		for t := range p.staleAt {
			stale = append(stale, t)
		}
		resend := p.resendReq
		p.mu.Unlock()
		sort.Strings(stale)

		var due <-chan time.Time
		if resend != resendSeen {
			if wait := minResend - time.Since(lastFull); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				due = timer.C
			} else {
				clear(sent)
				resendSeen, lastFull = resend, time.Now()
			}
		}
		err := p.publish(ctx, s, &subscribed, status, order, configs, stale, sent)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The connection is most likely going; if not, the next change tries again.
			p.log.Warn("discovery not published", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-due:
		}
	}
}

func (p *Publisher) publish(ctx context.Context, s *uplink.Session, subscribed *string, status string,
	order []string, configs map[string][]byte, stale []string, sent map[string][]byte) error {
	if *subscribed != status {
		if *subscribed != "" {
			if err := s.Unsubscribe(ctx, *subscribed); err != nil {
				return err
			}
		}
		*subscribed = ""
		if status != "" {
			if err := s.Subscribe(ctx, status, p.onStatus); err != nil {
				return err
			}
		}
		*subscribed = status
	}
	for _, t := range order {
		if c := configs[t]; !bytes.Equal(sent[t], c) {
			if err := s.Publish(ctx, t, true, c); err != nil {
				return err
			}
			sent[t] = c
		}
	}
	var done []string
	defer func() { p.cleared(done) }()
	for _, t := range stale {
		if err := s.Publish(ctx, t, true, nil); err != nil {
			return err
		}
		delete(sent, t)
		done = append(done, t)
	}
	return nil
}

// nodeID is the <node_id> level of the discovery topics: one per appliance.
func (p *Publisher) nodeID() string { return topicID("rackwatch", p.site.Site, p.site.Node) }

func (p *Publisher) applianceTopic() string {
	return p.site.Prefix + "/binary_sensor/" + p.nodeID() + "/uplink/config"
}

// topicID joins parts into a topic level HA accepts ([a-zA-Z0-9_-]). Where that is not
// reversible (a part holds '_' or other characters replaced) a hash of the parts is
// appended, so that two readings never share a config topic.
func topicID(parts ...string) string {
	var b strings.Builder
	lossy := false
	for i, s := range parts {
		if i > 0 {
			b.WriteByte('_')
		}
		for _, c := range s {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
				b.WriteRune(c)
			case c == '.' && i == len(parts)-1:
				b.WriteByte('_') // a metric's dots: it is the last part and has no '_'
				lossy = lossy || strings.Contains(s, "_")
			default:
				b.WriteByte('_')
				lossy = true
			}
		}
	}
	if lossy {
		h := fnv.New32a()
		h.Write([]byte(strings.Join(parts, "\x00")))
		fmt.Fprintf(&b, "_%08x", h.Sum32())
	}
	return b.String()
}

var errUnsafe = errors.New("not usable in a template")

// jinjaString quotes s as a Jinja string literal.
func jinjaString(s string) (string, error) {
	for _, c := range s {
		if c < ' ' || c == '{' || c == '}' || c == '%' || c == '#' {
			return "", fmt.Errorf("%q: %w", s, errUnsafe)
		}
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'", nil
}

// CheckPrefix reports why p cannot be the discovery prefix.
func CheckPrefix(p string) error {
	if p == "" || strings.ContainsAny(p, "+#\x00") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		return fmt.Errorf("%q is not usable as a topic prefix (empty, holds +, # or NUL, or an empty level)", p)
	}
	return nil
}
