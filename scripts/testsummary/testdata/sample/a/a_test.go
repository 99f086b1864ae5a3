package a

import "testing"

func TestPass(t *testing.T) { t.Log("quiet when it passes") }

func TestFail(t *testing.T) {
	t.Log("some context")
	t.Error("boom")
}

func TestSkip(t *testing.T) { t.Skip("*** mosquitto not found ***") }

func TestParent(t *testing.T) {
	t.Run("ok", func(t *testing.T) {})
	t.Run("bad", func(t *testing.T) { t.Fatal("subtest broke") })
	t.Run("skip", func(t *testing.T) { t.Skip("not here") })
}

func TestParentFailsAlone(t *testing.T) {
	t.Run("one", func(t *testing.T) {})
	t.Run("two", func(t *testing.T) {})
	t.Error("the parent's own check")
}
