package b

import "testing"

func TestBuild(t *testing.T) { var x int = "not an int"; _ = x }
