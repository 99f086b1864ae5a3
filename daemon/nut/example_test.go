package nut_test

import (
	"bufio"
	"context"
	"fmt"
	"net"

	"github.com/rackwatch/rackwatch/daemon/nut"
)

// oneUPS is the smallest Source: one UPS, read-only.
type oneUPS struct{ status string }

func (s oneUPS) UPSNames() []string { return []string{"ups1"} }
func (s oneUPS) UPS(name string) (nut.UPS, bool) {
	if name != "ups1" {
		return nut.UPS{}, false
	}
	return nut.UPS{Description: "rack 12", Vars: map[string]string{"ups.status": s.status}}, true
}
func (oneUPS) InstCmd(context.Context, string, string, string) error { return nut.ErrCmdNotSupported }
func (oneUPS) SetFSD(string) error                                   { return fmt.Errorf("read-only") }

func ExampleServer() {
	srv, err := nut.New(nut.Config{
		Users: []nut.User{{Name: "upsmon", Password: "secret"}}, // a secondary, as upsd.users would say
	}, oneUPS{status: "OB LB"}, nil)
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, l) }()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(c, "GET VAR ups1 ups.status\n")
	answer, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(answer)
	c.Close()

	cancel()
	<-done
	// Output: VAR ups1 ups.status "OB LB"
}
