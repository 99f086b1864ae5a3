// Command exit1 stands in for a broken rackwatch in the slot tests: it exits at once, as a
// release that cannot start would.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "exit1: a rackwatch that fails at start")
	os.Exit(1)
}
