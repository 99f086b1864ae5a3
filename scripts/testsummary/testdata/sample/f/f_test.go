package f

import (
	"testing"
	"time"
)

func TestHangs(t *testing.T) {
	t.Log("waiting for a peer that never answers")
	time.Sleep(time.Minute)
}
