package mqttconn

import (
	"testing"
	"time"
)

func TestParseBroker(t *testing.T) {
	for _, tc := range []struct {
		url      string
		ok, tls_ bool
	}{
		{"tcp://127.0.0.1:1883", true, false},
		{"mqtt://h:1883", true, false},
		{"ssl://h:8883", true, true},
		{"tls://h:8883", true, true},
		{"mqtts://h:8883", true, true},
		{"ws://h:80", false, false},
		{"tcp://h", false, false},
		{"tcp://:1883", false, false},
		{"tcp://h:0", false, false},
		{"tcp://h:65536", false, false},
		{"%zz", false, false},
	} {
		_, useTLS, err := ParseBroker(tc.url)
		if (err == nil) != tc.ok || useTLS != tc.tls_ {
			t.Errorf("%s: tls=%v err=%v, want ok=%v tls=%v", tc.url, useTLS, err, tc.ok, tc.tls_)
		}
	}
}

func TestBackoffWithinWindow(t *testing.T) {
	for attempt := range 40 {
		for range 100 {
			d := Backoff(time.Second, time.Minute, attempt)
			max := time.Minute
			if attempt < 6 {
				max = time.Second << attempt
			}
			if d <= 0 || d > max+time.Millisecond {
				t.Fatalf("attempt %d: %v outside (0, %v]", attempt, d, max)
			}
		}
	}
}
