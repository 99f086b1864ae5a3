package audit

import (
	"fmt"
	"time"
)

// refusal counts the failures of one source address in the current window.
type refusal struct {
	start      time.Time
	n          int // recorded in this window
	suppressed int
	first      time.Time // of the suppressed ones
	last       time.Time
	proto      Record
	timer      *time.Timer
}

// Refused records a failure that outsiders can repeat at will (a failed login, a refused
// command) from addr. Per source, address and action, RefusalBurst records are written per
// RefusalWindow; the rest are counted, and one suppressed record says how many once the
// window ends, so a flood costs the trail one record a window.
func (l *Log) Refused(addr string, r Record) {
	now := l.opt.Now()
	key := r.Source + " " + addr + " " + r.Action
	l.mu.Lock()
	rf, ok := l.refusals[key]
	if !ok {
		if len(l.refusals) >= MaxRefusalKeys {
			l.sweepLocked(now)
		}
		if len(l.refusals) >= MaxRefusalKeys {
			// Beyond the bound every address shares one count.
			key = r.Source + " * " + r.Action
			addr = "*"
			rf = l.refusals[key]
		}
		if rf == nil {
			rf = &refusal{start: now}
			l.refusals[key] = rf
		}
	}
	if now.Sub(rf.start) >= l.opt.RefusalWindow && rf.suppressed == 0 {
		rf.start, rf.n = now, 0
	}
	if rf.n < l.opt.RefusalBurst && rf.suppressed == 0 {
		rf.n++
		l.mu.Unlock()
		l.Append(r)
		return
	}
	if rf.suppressed == 0 {
		rf.first = now
		rf.proto = Record{Actor: r.Actor, Source: r.Source, Action: ActionSuppressed, Target: addr}
		wait := rf.start.Add(l.opt.RefusalWindow).Sub(now)
		rf.timer = time.AfterFunc(max(wait, time.Millisecond), func() { l.flushRefusal(key) })
	}
	rf.suppressed++
	l.suppress++
	rf.last = now
	l.mu.Unlock()
}

func (l *Log) flushRefusal(key string) {
	l.mu.Lock()
	rf, ok := l.refusals[key]
	if !ok || rf.suppressed == 0 {
		l.mu.Unlock()
		return
	}
	rec := l.summaryLocked(key, rf)
	l.mu.Unlock()
	l.Append(rec)
}

// summaryLocked makes the suppressed record of rf and starts a new window.
func (l *Log) summaryLocked(key string, rf *refusal) Record {
	rec := rf.proto
	_, action := splitKey(key)
	rec.Detail = fmt.Sprintf("%d more %s from %s between %s and %s, not recorded one by one", rf.suppressed, action,
		rec.Target, formatTime(rf.first), formatTime(rf.last))
	if rf.timer != nil {
		rf.timer.Stop()
		rf.timer = nil
	}
	rf.suppressed, rf.n, rf.start = 0, 0, l.opt.Now()
	return rec
}

func splitKey(key string) (prefix, action string) {
	for i := len(key) - 1; i >= 0; i-- {
		if key[i] == ' ' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// FlushRefusals writes the suppressed records of every window now (at a clean stop, so that
// what was counted is not lost).
func (l *Log) FlushRefusals() {
	l.mu.Lock()
	var recs []Record
	for key, rf := range l.refusals {
		if rf.suppressed > 0 {
			recs = append(recs, l.summaryLocked(key, rf))
		}
	}
	l.mu.Unlock()
	for _, r := range recs {
		l.Append(r)
	}
}

// sweepLocked forgets the addresses whose window ended with nothing suppressed.
func (l *Log) sweepLocked(now time.Time) {
	for key, rf := range l.refusals {
		if rf.suppressed == 0 && now.Sub(rf.start) >= l.opt.RefusalWindow {
			delete(l.refusals, key)
		}
	}
}
