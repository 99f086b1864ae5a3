package main

import (
	"fmt"
	"io"

	"github.com/rackwatch/rackwatch/daemon/config"
)

func runReplay(cfg *config.Config, timeline string, out, errOut io.Writer) int {
	fmt.Fprintln(errOut, "rackwatch:", errReplay)
	return 2
}
