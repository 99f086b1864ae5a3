// Package sparkplugtest is the test side of a Sparkplug host, for the tests of the edge node
// and of the daemon: a recorder of everything under spBv1.0/, a decoder that is Debian's protoc
// reading the vendored .proto (not our generated code), and a checker of the session rules.
package sparkplugtest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rackwatch/rackwatch/internal/testpeer"
	"github.com/rackwatch/rackwatch/uplink/sparkplug/spbpb"
	"google.golang.org/protobuf/encoding/prototext"
)

const namespace = "spBv1.0"

// protoFile is the vendored sparkplug_b.proto.
func protoFile(t testing.TB) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "..", "third_party", "tahu", "sparkplug_b.proto")
}

var (
	decodedMu sync.Mutex
	decoded   = map[string]*spbpb.Payload{} // payload → protoc's reading, for tests that check a growing stream often
)

// Decode decodes a payload with `protoc --decode` and reads protoc's text output back.
func Decode(t testing.TB, b []byte) (*spbpb.Payload, error) {
	decodedMu.Lock()
	p, ok := decoded[string(b)]
	decodedMu.Unlock()
	if ok {
		return p, nil
	}
	p, err := decode(t, b)
	if err == nil {
		decodedMu.Lock()
		decoded[string(b)] = p
		decodedMu.Unlock()
	}
	return p, err
}

func decode(t testing.TB, b []byte) (*spbpb.Payload, error) {
	protoc := testpeer.Require(t, "protoc", "protobuf-compiler")
	pf := protoFile(t)
	cmd := exec.Command(protoc, "--proto_path="+filepath.Dir(pf), "--decode", "org.eclipse.tahu.protobuf.Payload", filepath.Base(pf))
	cmd.Stdin = bytes.NewReader(b)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("protoc --decode: %v: %s", err, stderr.String())
	}
	var p spbpb.Payload
	if err := prototext.Unmarshal(out, &p); err != nil {
		return nil, fmt.Errorf("reading protoc's output %q: %w", out, err)
	}
	return &p, nil
}

// Encode encodes a payload written in protobuf text format with `protoc --encode`.
func Encode(t testing.TB, text string) []byte {
	protoc := testpeer.Require(t, "protoc", "protobuf-compiler")
	pf := protoFile(t)
	cmd := exec.Command(protoc, "--proto_path="+filepath.Dir(pf), "--encode", "org.eclipse.tahu.protobuf.Payload", filepath.Base(pf))
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("protoc --encode: %v", err)
	}
	return out
}

// Rec is one message as the broker delivered it.
type Rec struct {
	Topic   string
	Payload []byte
}

// Recorder subscribes to spBv1.0/# and keeps every message in the order the broker sent them.
type Recorder struct {
	c      mqtt.Client
	mu     sync.Mutex
	msgs   []Rec
	notify chan struct{} // a message arrived
}

// Record starts a recorder on the broker at url.
func Record(t testing.TB, url string) *Recorder {
	t.Helper()
	r := &Recorder{notify: make(chan struct{}, 1)}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("spb-rec-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetOrderMatters(true)
	r.c = mqtt.NewClient(o)
	if tok := r.c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder connect: %v", tok.Error())
	}
	tok := r.c.Subscribe(namespace+"/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, Rec{m.Topic(), append([]byte(nil), m.Payload()...)})
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	})
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { r.c.Disconnect(0) })
	return r
}

// All returns the messages so far.
func (r *Recorder) All() []Rec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Rec(nil), r.msgs...)
}

// WaitTopic waits until n messages on topic have arrived (60 s at most), woken by each
// message rather than polling, so that a test can wait for hundreds of messages one by one.
func (r *Recorder) WaitTopic(t testing.TB, topic string, n int) {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got := 0
		for _, m := range r.msgs {
			if m.Topic == topic {
				got++
			}
		}
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %d messages on %s (%d arrived)", n, topic, got)
		}
	}
}

// Publish sends payload on topic with QoS 1 (retained if asked) and waits for the PUBACK.
func (r *Recorder) Publish(t testing.TB, topic string, retain bool, payload []byte) {
	t.Helper()
	tok := r.c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// Msg is a decoded Sparkplug message.
type Msg struct {
	Type, Device string
	P            *spbpb.Payload // nil for STATE and commands
	Raw          []byte         // STATE messages: the JSON
}

// Session is what CheckSession saw.
type Session struct {
	Msgs   []Msg
	Births []uint64 // bdSeq of each NBIRTH, in order
	Deaths []uint64 // bdSeq of each NDEATH, in order
	// Values is the latest metric seen per "device/metric name", as protoc decoded it.
	Values map[string]*spbpb.Payload_Metric
}

// Count is how many messages of type typ (of device, if not empty) were seen.
func (s *Session) Count(typ, device string) int {
	n := 0
	for _, m := range s.Msgs {
		if m.Type == typ && (device == "" || m.Device == device) {
			n++
		}
	}
	return n
}

// CheckSession decodes every message of group/edge with protoc and checks the Sparkplug session
// rules: NBIRTH with seq 0, bdSeq and Node Control/Rebirth before anything else; a DBIRTH for a
// device before its DDATA; every birth metric with name, alias and datatype, every data metric
// with an alias of its device's birth; seq +1 mod 256 from message to message within a
// session; an NDEATH with the bdSeq of the NBIRTH it ends and no seq. Violations are test
// errors.
func CheckSession(t testing.TB, msgs []Rec, group, edge string) *Session {
	t.Helper()
	s := &Session{Values: map[string]*spbpb.Payload_Metric{}}
	prefix := namespace + "/" + group + "/"
	var (
		born    bool
		bd      uint64
		lastSeq uint64
		aliases map[string]map[uint64]string // device → alias → name
		devBorn map[string]bool
	)
	for i, r := range msgs {
		if strings.HasPrefix(r.Topic, namespace+"/STATE/") {
			s.Msgs = append(s.Msgs, Msg{Type: "STATE", Raw: r.Payload})
			continue
		}
		rest, ok := strings.CutPrefix(r.Topic, prefix)
		if !ok {
			continue
		}
		parts := strings.Split(rest, "/")
		if len(parts) < 2 || parts[1] != edge {
			continue
		}
		typ, dev := parts[0], ""
		if len(parts) == 3 {
			dev = parts[2]
		}
		if typ == "NCMD" || typ == "DCMD" {
			s.Msgs = append(s.Msgs, Msg{Type: typ, Device: dev})
			continue
		}
		p, err := Decode(t, r.Payload)
		if err != nil {
			t.Errorf("message %d %s: %v", i, r.Topic, err)
			continue
		}
		s.Msgs = append(s.Msgs, Msg{Type: typ, Device: dev, P: p})
		where := fmt.Sprintf("message %d %s", i, r.Topic)
		if typ != "NDEATH" && p.Timestamp == nil {
			t.Errorf("%s: no payload timestamp", where)
		}
		seqOK := func() {
			if p.Seq == nil {
				t.Errorf("%s: no seq", where)
				return
			}
			if want := (lastSeq + 1) % 256; p.GetSeq() != want {
				t.Errorf("%s: seq %d, want %d", where, p.GetSeq(), want)
			}
			lastSeq = p.GetSeq()
		}
		switch typ {
		case "NBIRTH":
			if p.Seq == nil || p.GetSeq() != 0 {
				t.Errorf("%s: NBIRTH seq must be 0", where)
			}
			lastSeq = 0
			var haveBd, haveRebirth bool
			for _, m := range p.Metrics {
				if m.Name == nil || m.Datatype == nil {
					t.Errorf("%s: birth metric without name or datatype: %v", where, m)
				}
				switch m.GetName() {
				case "bdSeq":
					haveBd, bd = true, m.GetLongValue()
					if m.GetDatatype() != uint32(spbpb.DataType_Int64) || bd > 255 {
						t.Errorf("%s: bdSeq %v not an Int64 in 0-255", where, m)
					}
				case "Node Control/Rebirth":
					haveRebirth = m.GetDatatype() == uint32(spbpb.DataType_Boolean)
				}
			}
			if !haveBd || !haveRebirth {
				t.Errorf("%s: NBIRTH without bdSeq or Node Control/Rebirth (Boolean)", where)
			}
			born = true
			aliases, devBorn = map[string]map[uint64]string{}, map[string]bool{}
			s.Births = append(s.Births, bd)
		case "DBIRTH":
			if !born {
				t.Errorf("%s: DBIRTH before NBIRTH", where)
			}
			seqOK()
			devBorn[dev] = true
			aliases[dev] = map[uint64]string{}
			for _, m := range p.Metrics {
				if m.Name == nil || m.Alias == nil || m.Datatype == nil {
					t.Errorf("%s: birth metric without name, alias or datatype: %v", where, m)
					continue
				}
				aliases[dev][m.GetAlias()] = m.GetName()
				s.Values[dev+"/"+m.GetName()] = m
			}
		case "DDATA":
			if !born || !devBorn[dev] {
				t.Errorf("%s: DDATA before its NBIRTH/DBIRTH", where)
			}
			seqOK()
			if len(p.Metrics) == 0 {
				t.Errorf("%s: DDATA without metrics", where)
			}
			for _, m := range p.Metrics {
				name, ok := aliases[dev][m.GetAlias()]
				if m.Alias == nil || !ok {
					t.Errorf("%s: metric alias %v not born for %s", where, m.Alias, dev)
					continue
				}
				s.Values[dev+"/"+name] = m
			}
		case "NDATA", "DDEATH":
			if !born {
				t.Errorf("%s: %s before NBIRTH", where, typ)
			}
			seqOK()
		case "NDEATH":
			if p.Seq != nil {
				t.Errorf("%s: NDEATH carries a seq", where)
			}
			if len(p.Metrics) != 1 || p.Metrics[0].GetName() != "bdSeq" {
				t.Errorf("%s: NDEATH must hold the bdSeq metric alone: %v", where, p.Metrics)
				continue
			}
			d := p.Metrics[0].GetLongValue()
			s.Deaths = append(s.Deaths, d)
			if born && d != bd {
				t.Errorf("%s: NDEATH bdSeq %d, the NBIRTH had %d", where, d, bd)
			}
			born = false
		default:
			t.Errorf("%s: unexpected message type", where)
		}
	}
	return s
}
