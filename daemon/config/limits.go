package config

import (
	"fmt"
	"math"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxBytes is the largest config file read: a site's config is a few kB, and a file far
// larger is a mistake (a log or a binary named by -config) that should not be parsed.
const MaxBytes = 1 << 20

// MinTelemetryInterval is the shortest mqtt.telemetry_interval: each snapshot carries every
// reading, so a shorter one busies a core and the link with copies of the same values.
const MinTelemetryInterval = 100 * time.Millisecond

// MaxShown is how much of a value an error message repeats; the rest is cut, so that a huge
// value in a file is never echoed back whole.
const MaxShown = 80

// cut shortens s to MaxShown characters, marking the cut with an ellipsis.
func cut(s string) string {
	if len(s) <= MaxShown {
		return s
	}
	n := 0
	for i := range s {
		if n == MaxShown {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// names is a list of our own (the drivers) for a message: never cut, unlike the file's values.
type names []string

func (n names) String() string { return strings.Join(n, ", ") }

// cutArgs shortens every string argument of a message.
func cutArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = cut(v)
		case error:
			out[i] = cutRuns(v.Error())
		default:
			out[i] = a
		}
	}
	return out
}

// longRun is a word too long to repeat whole.
var longRun = regexp.MustCompile(`\S{` + strconv.Itoa(MaxShown+1) + `,}`)

// cutRuns cuts every long word of a message the runtime wrote (which quotes the value it
// refuses) and keeps the rest, the reason.
func cutRuns(s string) string {
	return longRun.ReplaceAllStringFunc(s, cut)
}

// cutMsg bounds a whole message that may quote values it did not cut itself (the YAML
// decoder's), keeping it valid UTF-8.
func cutMsg(s string) string {
	const max = 4 * MaxShown
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// checkFinite refuses .nan and .inf anywhere in the file: no threshold, scale or value of a
// rack means anything when it is not a finite number.
func (c *checker) checkFinite(n *yaml.Node, key string) {
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.ScalarNode:
		var f float64
		if n.ShortTag() == "!!float" && n.Decode(&f) == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			c.addf(n, "%s: %s is not a finite number", key, n.Value)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.checkFinite(n.Content[i+1], n.Content[i].Value)
		}
	case yaml.SequenceNode, yaml.DocumentNode:
		for _, e := range n.Content {
			c.checkFinite(e, key)
		}
	}
}

// checkListen checks an address to listen on as the runtime will use it: host:port with a
// port the network stack accepts (0-65535 or a service name; 0 lets the kernel pick one,
// which tests use).
func (c *checker) checkListen(network, addr string, path ...any) {
	where := make([]string, len(path))
	for i, p := range path {
		where[i] = fmt.Sprint(p)
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort(network, port)
	}
	if err != nil {
		c.addf(c.at(path...), "%s %q: write it as host:port, the port 1-65535 (0: any free port) (%v)", strings.Join(where, "."), addr, err)
	}
}

// checkNegative refuses a negative duration or count anywhere in the config (a negative
// retention would drop every resolved incident, a negative connection cap means nothing), at
// the line of the value, unless that line has a problem already.
func (c *checker) checkNegative(v reflect.Value, path []any, lines map[int]bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface: // a device's Options are an interface
		if !v.IsNil() {
			c.checkNegative(v.Elem(), path, lines)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if !t.Field(i).IsExported() && !t.Field(i).Anonymous {
				continue
			}
			// A device's Options (yaml "-": decoded by sensors.Spec) and inline structs
			// hold keys of the mapping they sit in.
			inline := name == "" && strings.Contains(","+opts+",", ",inline,")
			if inline || name == "-" && t.Field(i).Type.Kind() == reflect.Interface {
				c.checkNegative(v.Field(i), path, lines)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			c.checkNegative(v.Field(i), append(path[:len(path):len(path)], name), lines)
		}
	case reflect.Slice:
		for i := range v.Len() {
			c.checkNegative(v.Index(i), append(path[:len(path):len(path)], i), lines)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.Int() >= 0 {
			return
		}
		n := c.at(path...)
		if n == nil || lines[n.Line] {
			return
		}
		lines[n.Line] = true
		where := make([]string, len(path))
		for i, p := range path {
			where[i] = fmt.Sprint(p)
		}
		c.addf(n, "%s: %s must not be negative", strings.Join(where, "."), n.Value)
	}
}
