package notify

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Delivery is where an incident's latest event stands at one target.
type Delivery struct {
	Event string    `json:"event"`
	State string    `json:"state"` // queued, delivered, dropped
	At    time.Time `json:"at"`
}

// Delivery states.
const (
	Queued    = "queued"
	Delivered = "delivered"
	Dropped   = "dropped"
)

// MaxDeliveryRecords bounds the delivery records kept (the oldest incidents' go first).
const MaxDeliveryRecords = 2000

var bDelivery = []byte("notify-delivery")

// deliveryKey sorts incidents by number ("rack12-42" under 42, zero-padded), so the first
// key is the oldest incident.
func deliveryKey(id string) []byte {
	i := strings.LastIndexByte(id, '-')
	n, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil {
		return []byte(id)
	}
	return []byte(fmt.Sprintf("%020d", n))
}

// record sets targets' delivery state of incident id inside tx.
func (n *Notifier) record(tx *bolt.Tx, id, event, state string, targets ...string) error {
	if id == "" || len(targets) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bDelivery)
	if err != nil {
		return err
	}
	k := deliveryKey(id)
	m := map[string]Delivery{}
	if v := b.Get(k); v != nil {
		json.Unmarshal(v, &m)
	} else if b.Stats().KeyN >= MaxDeliveryRecords {
		if fk, _ := b.Cursor().First(); fk != nil {
			b.Delete(fk)
		}
	}
	now := n.opt.Now().UTC()
	for _, t := range targets {
		if state == Delivered {
			if d, ok := m[t]; ok && d.Event != event {
				// A later event is queued behind this one: the record says where that stands.
				continue
			}
		}
		m[t] = Delivery{Event: event, State: state, At: now}
	}
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

// Deliveries are where incident id's latest event stands at each target it was sent to.
func (n *Notifier) Deliveries(id string) map[string]Delivery {
	var m map[string]Delivery
	n.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDelivery)
		if b == nil {
			return nil
		}
		if v := b.Get(deliveryKey(id)); v != nil {
			json.Unmarshal(v, &m)
		}
		return nil
	})
	return m
}
