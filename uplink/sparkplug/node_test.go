package sparkplug_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/uplink/sparkplug"
	"github.com/rackwatch/rackwatch/uplink/sparkplug/sparkplugtest"
	"go.etcd.io/bbolt"
)

const within = 60 * time.Second

func openDB(t *testing.T, dir string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "test.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// start runs a node on db against url until the returned stop is called (which waits for it).
func start(t *testing.T, db *bbolt.DB, url string, cfg sparkplug.Config) (*sparkplug.Node, func()) {
	t.Helper()
	n, err := sparkplug.New(sparkplug.Options{Config: cfg, Brokers: []string{url}, DB: db,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return n, stop
}

func waitFor(t *testing.T, r *sparkplugtest.Recorder, what string, cond func(s *sparkplugtest.Session) bool) *sparkplugtest.Session {
	t.Helper()
	var s *sparkplugtest.Session
	testpeer.Eventually(t, within, what, func() bool {
		s = sparkplugtest.CheckSession(t, r.All(), "site1", "rack1")
		return cond(s)
	})
	return s
}

func readings(v1, v2 float64, door string) []sparkplug.Metric {
	ts := time.Now()
	return []sparkplug.Metric{
		{Device: "ups1", Name: "input.voltage", Value: v1, Unit: "V", Quality: "good", TS: ts},
		{Device: "ups1", Name: "battery.charge", Value: v2, Unit: "%", Quality: "good", TS: ts},
		{Device: "door", Name: "open", Value: door == "open", Quality: "good", TS: ts},
		{Device: "door", Name: "state", Value: door, Quality: "good", TS: ts},
	}
}

// TestSessionRules: births with every metric's name, alias and datatype, then only what
// changed, seq wrapping past 255, a rebirth on NCMD (a garbage NCMD counted and survived),
// and NDEATH with the NBIRTH's bdSeq on a clean stop.
func TestSessionRules(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	r := sparkplugtest.Record(t, m.URL)
	db := openDB(t, t.TempDir())
	defer db.Close()
	n, stop := start(t, db, m.URL, sparkplug.Config{Group: "site1", EdgeNode: "rack1"})
	n.Update(readings(230, 100, "closed"))
	s := waitFor(t, r, "NBIRTH and two DBIRTHs", func(s *sparkplugtest.Session) bool {
		return s.Count("NBIRTH", "") == 1 && s.Count("DBIRTH", "") == 2
	})
	v := s.Values["ups1/input.voltage"]
	if v.GetName() != "input.voltage" || v.GetDatatype() != 10 || v.GetDoubleValue() != 230 || v.Alias == nil {
		t.Errorf("DBIRTH metric: %v", v)
	}
	props := v.GetProperties()
	if fmt.Sprint(props.GetKeys()) != "[Quality engUnit]" || props.GetValues()[1].GetStringValue() != "V" || props.GetValues()[0].GetIntValue() != 192 {
		t.Errorf("DBIRTH properties: %v", props)
	}
	if d := s.Values["door/state"]; d.GetDatatype() != 12 || d.GetStringValue() != "closed" {
		t.Errorf("DBIRTH string metric: %v", d)
	}
	if d := s.Values["door/open"]; d.GetDatatype() != 11 || d.GetBooleanValue() {
		t.Errorf("DBIRTH boolean metric: %v", d)
	}

	// Only the metric that changed, by alias, without its name.
	n.Update(readings(231, 100, "closed"))
	s = waitFor(t, r, "a DDATA", func(s *sparkplugtest.Session) bool { return s.Count("DDATA", "") == 1 })
	last := s.Msgs[len(s.Msgs)-1]
	if last.Type != "DDATA" || last.Device != "ups1" || len(last.P.Metrics) != 1 || last.P.Metrics[0].Name != nil ||
		last.P.Metrics[0].GetDoubleValue() != 231 {
		t.Fatalf("DDATA: want ups1 input.voltage alone, by alias: %+v %v", last, last.P)
	}

	// Past 255: the seq wraps; the same values again publish nothing (the next DDATA holds
	// only the change after them).
	const rounds = 260
	prev := 100.0
	for i := range rounds {
		n.Update(readings(231, prev, "closed"))
		n.Update(readings(231, float64(i), "closed"))
		prev = float64(i)
		r.WaitTopic(t, n.Topic("DDATA", "ups1"), i+2)
	}
	s = waitFor(t, r, "all DDATA checked", func(s *sparkplugtest.Session) bool { return s.Count("DDATA", "") == rounds+1 })
	for i, m := range s.Msgs[len(s.Msgs)-rounds:] {
		if p := m.P; len(p.Metrics) != 1 || p.Metrics[0].GetDoubleValue() != float64(i) {
			t.Fatalf("DDATA %d: %v", i, p)
		}
	}

	// A payload that is not Sparkplug is dropped and counted; a rebirth request is honoured.
	r.Publish(t, n.Topic("NCMD", ""), false, []byte("not protobuf \xff\xff\xff"))
	r.Publish(t, n.Topic("NCMD", ""), false, sparkplugtest.Encode(t,
		`timestamp: 1 metrics { name: "Node Control/Rebirth" datatype: 11 boolean_value: true }`))
	s = waitFor(t, r, "rebirth", func(s *sparkplugtest.Session) bool {
		return s.Count("NBIRTH", "") == 2 && s.Count("DBIRTH", "") == 4
	})
	if c := n.Counters(); c.BadCommands != 1 || c.Rebirths != 1 {
		t.Errorf("counters: %+v", c)
	}
	if s.Births[0] != s.Births[1] {
		t.Errorf("a rebirth keeps the bdSeq: %v", s.Births)
	}
	if s.Values["ups1/battery.charge"].GetDoubleValue() != rounds-1 {
		t.Errorf("rebirth carries the current value: %v", s.Values["ups1/battery.charge"])
	}

	stop()
	s = waitFor(t, r, "NDEATH on stop", func(s *sparkplugtest.Session) bool { return len(s.Deaths) == 1 })
	if s.Deaths[0] != s.Births[0] {
		t.Errorf("NDEATH bdSeq %d, NBIRTH %d", s.Deaths[0], s.Births[0])
	}
}

// TestBdSeqPersisted: the next run's bdSeq is the last one + 1, from the database, and the
// number wraps at 255.
func TestBdSeqPersisted(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	r := sparkplugtest.Record(t, m.URL)
	dir := t.TempDir()
	cfg := sparkplug.Config{Group: "site1", EdgeNode: "rack1"}
	var want []uint64
	for i := range 3 {
		db := openDB(t, dir)
		if i == 2 {
			// Skip ahead to the wrap.
			db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("uplink.sparkplug")).Put([]byte("bdseq"), []byte{0, 0, 0, 0, 0, 0, 0, 255})
			})
		}
		n, stop := start(t, db, m.URL, cfg)
		n.Update(readings(230, 100, "closed"))
		waitFor(t, r, fmt.Sprintf("run %d: NDEATH", i), func(s *sparkplugtest.Session) bool { return s.Count("DBIRTH", "") == 2*(i+1) })
		stop()
		db.Close()
		s := waitFor(t, r, fmt.Sprintf("run %d: NDEATH", i), func(s *sparkplugtest.Session) bool { return len(s.Deaths) == i+1 })
		want = append(want, []uint64{0, 1, 0}[i])
		if fmt.Sprint(s.Births) != fmt.Sprint(want) || fmt.Sprint(s.Deaths) != fmt.Sprint(want) {
			t.Fatalf("run %d: births %v, deaths %v, want %v", i, s.Births, s.Deaths, want)
		}
	}
}

// TestBdSeqWrittenOncePerConnection: attempts that no broker answers write nothing; the
// bdSeq is written before the first attempt and again only after a connection was accepted.
func TestBdSeqWrittenOncePerConnection(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	m.Stop()
	db := openDB(t, t.TempDir())
	defer db.Close()
	writes := func() int64 { s := db.Stats(); return s.TxStats.GetWrite() }
	n, _ := start(t, db, m.URL, sparkplug.Config{Group: "site1", EdgeNode: "rack1"})
	testpeer.Eventually(t, within, "failed attempts", func() bool { return n.Counters().Attempts >= 5 })
	w := writes()
	if w == 0 {
		t.Fatal("bdSeq not written before the first attempt")
	}
	first := n.Counters().Attempts
	testpeer.Eventually(t, within, "more failed attempts", func() bool { return n.Counters().Attempts >= first+5 })
	if writes() != w {
		t.Fatalf("failed attempts wrote to the database: %d writes, then %d", w, writes())
	}
	m.Start()
	testpeer.Eventually(t, within, "births", func() bool { return n.Counters().Sessions == 1 })
	if writes() != w {
		t.Fatalf("the accepted connection's bdSeq was written again: %d writes, then %d", w, writes())
	}
	m.Stop()
	testpeer.Eventually(t, within, "failed attempts after the loss", func() bool { return n.Counters().Attempts >= first+10 })
	w2 := writes()
	if w2 == w {
		t.Fatal("the next bdSeq was not written after the accepted connection")
	}
	at := n.Counters().Attempts
	testpeer.Eventually(t, within, "more failed attempts", func() bool { return n.Counters().Attempts >= at+5 })
	if writes() != w2 {
		t.Fatalf("failed attempts wrote to the database: %d writes, then %d", w2, writes())
	}
}

// TestPrimaryHost: no births until the primary host's STATE says online; a STATE older than
// the latest is ignored; on offline, NDEATH and a new session that waits again.
func TestPrimaryHost(t *testing.T) {
	m := testpeer.StartMosquitto(t)
	r := sparkplugtest.Record(t, m.URL)
	state := func(online bool, ts int64) []byte {
		return fmt.Appendf(nil, `{"online":%v,"timestamp":%d}`, online, ts)
	}
	topic := "spBv1.0/STATE/scada1"
	r.Publish(t, topic, true, state(false, 1000))
	db := openDB(t, t.TempDir())
	defer db.Close()
	n, _ := start(t, db, m.URL, sparkplug.Config{Group: "site1", EdgeNode: "rack1", PrimaryHost: "scada1"})
	n.Update(readings(230, 100, "closed"))
	testpeer.Eventually(t, within, "the node subscribed", func() bool { return n.Counters().Connects == 1 })
	// Births can only follow an online STATE, so in the broker's order the NBIRTH comes after
	// the newer online STATE, never after the stale one.
	r.Publish(t, topic, true, state(true, 900)) // older than the retained offline: ignored
	r.Publish(t, topic, false, []byte("garbage"))
	r.Publish(t, topic, true, state(true, 2000))
	s := waitFor(t, r, "births after online", func(s *sparkplugtest.Session) bool { return s.Count("DBIRTH", "") == 2 })
	if i := index(s, "NBIRTH"); i < 0 || !after(s, i, `"timestamp":2000`) {
		t.Fatalf("NBIRTH before the host's online STATE: %v", types(s))
	}
	// The garbage came before the online STATE the births waited for, so it is counted.
	if c := n.Counters(); c.BadStates != 1 {
		t.Errorf("unreadable STATEs counted: %d, want 1", c.BadStates)
	}
	// A stale offline changes nothing: the rebirth asked for after it comes, no NDEATH.
	r.Publish(t, topic, false, state(false, 1500))
	r.Publish(t, n.Topic("NCMD", ""), false, sparkplugtest.Encode(t, `metrics { name: "Node Control/Rebirth" boolean_value: true }`))
	s = waitFor(t, r, "rebirth", func(s *sparkplugtest.Session) bool { return s.Count("NBIRTH", "") == 2 })
	if len(s.Deaths) != 0 {
		t.Fatalf("NDEATH on a stale offline STATE: %v", types(s))
	}
	// Offline: NDEATH; the node reconnects and waits for online again, then births with
	// the next bdSeq.
	r.Publish(t, topic, true, state(false, 3000))
	waitFor(t, r, "NDEATH", func(s *sparkplugtest.Session) bool { return len(s.Deaths) == 1 })
	r.Publish(t, topic, true, state(true, 4000))
	s = waitFor(t, r, "births after online", func(s *sparkplugtest.Session) bool { return s.Count("NBIRTH", "") == 3 })
	if !after(s, lastIndex(s, "NBIRTH"), `"timestamp":4000`) {
		t.Fatalf("births while the host was offline: %v", types(s))
	}
	if fmt.Sprint(s.Births) != "[0 0 1]" || fmt.Sprint(s.Deaths) != "[0]" {
		t.Fatalf("bdSeqs: births %v, deaths %v", s.Births, s.Deaths)
	}
}

func index(s *sparkplugtest.Session, typ string) int {
	for i, m := range s.Msgs {
		if m.Type == typ {
			return i
		}
	}
	return -1
}

func lastIndex(s *sparkplugtest.Session, typ string) int {
	for i := len(s.Msgs) - 1; i >= 0; i-- {
		if s.Msgs[i].Type == typ {
			return i
		}
	}
	return -1
}

// after tells whether the last STATE before message i holds sub.
func after(s *sparkplugtest.Session, i int, sub string) bool {
	for j := i - 1; j >= 0; j-- {
		if s.Msgs[j].Type == "STATE" {
			return strings.Contains(string(s.Msgs[j].Raw), sub)
		}
	}
	return false
}

func types(s *sparkplugtest.Session) []string {
	var out []string
	for _, m := range s.Msgs {
		out = append(out, m.Type+"/"+m.Device+":"+string(m.Raw))
	}
	return out
}
