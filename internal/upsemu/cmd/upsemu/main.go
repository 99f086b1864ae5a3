// Command upsemu serves the Megatec/Q1 UPS emulator of internal/upsemu for manual tests,
// end-to-end tests in other languages and QEMU, and is driven by lines on stdin.
//
//	upsemu                          # on a new pty; prints its path, e.g. /dev/pts/7
//	upsemu -listen unix:/tmp/ups.sock   # serves each connection (QEMU: chardev socket,server=off)
//	upsemu -listen tcp:127.0.0.1:7001
//	upsemu -dial unix:/tmp/qemu-ups.sock # connects to a listening chardev (server=on), redials
//
// The first line on stdout is the pty path or the socket address. Commands on stdin, one a
// line: ob, ol (utility fail on/off), lb, nolb (battery low on/off), input V, load N,
// battery V, status BITS (8 binary digits, b7 first), fault none|silent|garbage|echo|
// truncated|nocr|nak [COMMAND] (all commands, or only that one, e.g. "fault nak I"), show,
// quit. When stdin ends it keeps serving until SIGINT/SIGTERM.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rackwatch/rackwatch/internal/upsemu"
)

func main() {
	listen := flag.String("listen", "", "serve on unix:PATH or tcp:HOST:PORT instead of a pty")
	dial := flag.String("dial", "", "connect to unix:PATH or tcp:HOST:PORT and serve on that connection")
	flag.Parse()
	if err := run(*listen, *dial, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "upsemu:", err)
		os.Exit(1)
	}
}

func splitAddr(a string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(a, ":")
	if !ok || (network != "unix" && network != "tcp") || addr == "" {
		return "", "", fmt.Errorf("address %q: want unix:PATH or tcp:HOST:PORT", a)
	}
	return network, addr, nil
}

func run(listen, dial string, in io.Reader, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The serving goroutines end when ctx does: cancel first, then wait (defers run last
	// first).
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var e *upsemu.Emulator
	switch {
	case listen != "" && dial != "":
		return errors.New("-listen and -dial exclude each other")
	case listen != "":
		network, addr, err := splitAddr(listen)
		if err != nil {
			return err
		}
		if network == "unix" {
			os.Remove(addr)
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		defer l.Close()
		context.AfterFunc(ctx, func() { l.Close() })
		e = upsemu.New()
		fmt.Fprintf(out, "%s:%s\n", network, l.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.ServeListener(ctx, l, func(err error) { slog.Warn("connection ended", "err", err) })
		}()
	case dial != "":
		network, addr, err := splitAddr(dial)
		if err != nil {
			return err
		}
		e = upsemu.New()
		fmt.Fprintf(out, "%s:%s\n", network, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			backoff := 100 * time.Millisecond
			for ctx.Err() == nil {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					backoff = 100 * time.Millisecond
					e.Serve(ctx, c)
					c.Close()
					continue
				}
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
			}
		}()
	default:
		var err error
		e, err = upsemu.Start(ctx)
		if err != nil {
			return err
		}
		defer e.Close()
		fmt.Fprintln(out, e.Path())
	}

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				lines = nil // stdin ended: serve until a signal
				continue
			}
			quit, err := command(e, l, out)
			if err != nil {
				fmt.Fprintln(out, "error:", err)
			}
			if quit {
				return nil
			}
		}
	}
}

// command applies one stdin line.
func command(e *upsemu.Emulator, line string, out io.Writer) (quit bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false, nil
	}
	arg := func() (float64, error) {
		if len(f) != 2 {
			return 0, fmt.Errorf("%s needs one number", f[0])
		}
		return strconv.ParseFloat(f[1], 64)
	}
	switch f[0] {
	case "quit", "exit":
		return true, nil
	case "ob":
		e.SetOnBattery(true)
	case "ol":
		e.SetOnBattery(false)
	case "lb":
		e.SetLowBattery(true)
	case "nolb":
		e.SetLowBattery(false)
	case "input", "load", "battery":
		v, err := arg()
		if err != nil {
			return false, err
		}
		e.Update(func(fl *upsemu.Fields) {
			switch f[0] {
			case "input":
				fl.InputVoltage = v
			case "load":
				fl.Load = int(v)
			case "battery":
				fl.BatteryVoltage = v
			}
		})
	case "status":
		if len(f) != 2 {
			return false, errors.New("status needs 8 binary digits")
		}
		b, err := strconv.ParseUint(f[1], 2, 8)
		if err != nil || len(f[1]) != 8 {
			return false, fmt.Errorf("status %q: want 8 binary digits", f[1])
		}
		e.SetStatus(upsemu.Status(b))
	case "fault":
		if len(f) != 2 && len(f) != 3 {
			return false, errors.New("fault needs a name, and optionally a command (fault nak I)")
		}
		ft, err := upsemu.ParseFault(f[1])
		if err != nil {
			return false, err
		}
		if len(f) == 3 {
			e.SetCommandFault(f[2], ft)
		} else {
			e.SetFault(ft)
		}
	case "show":
		fmt.Fprintf(out, "%q\n", e.Q1Frame())
		return false, nil
	default:
		return false, fmt.Errorf("unknown command %q (ob, ol, lb, nolb, input V, load N, battery V, status BITS, fault NAME [CMD], show, quit)", f[0])
	}
	fmt.Fprintln(out, "ok")
	return false, nil
}
