package gpio

import (
	"testing"

	pgpio "periph.io/x/conn/v3/gpio"
)

func TestPolarity(t *testing.T) {
	for _, tc := range []struct {
		active  string
		on      pgpio.Level
		pull    pgpio.Pull
		wantErr bool
	}{
		{"", pgpio.High, pgpio.PullDown, false},
		{"high", pgpio.High, pgpio.PullDown, false},
		{"low", pgpio.Low, pgpio.PullUp, false},
		{"LOW", false, 0, true},
		{"on", false, 0, true},
	} {
		p, err := ParsePolarity(tc.active)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%q accepted", tc.active)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Level(true) != tc.on || p.Level(false) == tc.on {
			t.Errorf("%q: Level(true) = %v", tc.active, p.Level(true))
		}
		if !p.On(tc.on) || p.On(!tc.on) {
			t.Errorf("%q: On is not the inverse of Level", tc.active)
		}
		if p.Pull() != tc.pull {
			t.Errorf("%q: pull %v, want %v", tc.active, p.Pull(), tc.pull)
		}
	}
}

// TestOpenMissing: on this machine (no such line) Open fails with the name in the message.
func TestOpenMissing(t *testing.T) {
	if _, err := Open("GPIO_NO_SUCH_LINE_999"); err == nil {
		t.Fatal("a line that does not exist was opened")
	} else {
		t.Log(err)
	}
	if _, err := Open(""); err == nil {
		t.Fatal("empty name accepted")
	}
}
