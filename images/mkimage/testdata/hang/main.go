// Command hang stands in for a rackwatch that hangs at start in the update tests: it never
// says READY=1, so /init's start timeout must catch it.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	fmt.Fprintln(os.Stderr, "hang: a rackwatch that never gets ready")
	for {
		time.Sleep(time.Hour)
	}
}
