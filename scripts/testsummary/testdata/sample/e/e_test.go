package e

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	m.Run()
	fmt.Println("TestMain: cleanup failed")
	os.Exit(1)
}

func TestFine(t *testing.T) {}
