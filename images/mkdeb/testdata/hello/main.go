// Command hello is the payload of mkdeb's tests: a real static binary of the package's
// architecture that builds in a second.
package main

import "os"

func main() { os.Stdout.WriteString("hello from the rackwatch package test\n") }
