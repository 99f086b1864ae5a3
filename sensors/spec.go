package sensors

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Spec is one entry of the config's devices list (CONTRACT.md §2): the keys every driver
// shares, and Options, the driver's own keys decoded into the option struct the driver
// registered.
type Spec struct {
	ID     string        `yaml:"id"`
	Driver string        `yaml:"driver"`
	Poll   time.Duration `yaml:"poll"`
	// Timeout bounds one poll; default: the smaller of Poll and 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Description is free text shown on the page and as the NUT UPS description.
	Description string `yaml:"description"`

	// Options is a value of the type of the driver's Driver.Options (nil for a driver that
	// takes no keys of its own, or an unknown driver). Drivers read it with Opts.
	Options any `yaml:"-"`

	// problems are what decoding found wrong, kept here rather than returned: the yaml
	// package drops a list element whose unmarshaler fails, which would shift every later
	// device's index (and line) and lose the device for the checks that name it.
	problems []string
}

// Problems lists what decoding the spec from YAML found wrong (unknown keys, values of the
// wrong type), each as "line N: message".
func (s Spec) Problems() []string { return s.problems }

// common are the keys of Spec itself; the driver's option struct gets every other key.
var common = map[string]bool{"id": true, "driver": true, "poll": true, "timeout": true, "description": true}

// Opts returns spec's options as the driver's option type T: the zero T when the spec has
// none (a Spec made in code) or options of another type.
func Opts[T any](spec Spec) T {
	o, _ := spec.Options.(T)
	return o
}

// UnmarshalYAML decodes the common keys, then the rest into a new value of the registered
// driver's option struct. An unknown key is a problem at its line, as the config's strict
// decoder would find it (a custom unmarshaler escapes that decoder's known-fields check);
// see Problems.
func (s *Spec) UnmarshalYAML(n *yaml.Node) (err error) {
	defer func() {
		// A node this code did not foresee must not crash a config check.
		if r := recover(); r != nil {
			err = fmt.Errorf("line %d: cannot read this device: %v", n.Line, r)
		}
	}()
	return s.unmarshalYAML(n)
}

func (s *Spec) unmarshalYAML(n *yaml.Node) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		// Let the decoder word the type error (a device must be a mapping).
		type plain Spec
		return n.Decode((*plain)(s))
	}
	n = Unmerge(n)
	mine := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	for i := 0; i+1 < len(n.Content); i += 2 {
		to := rest
		if common[n.Content[i].Value] {
			to = mine
		}
		to.Content = append(to.Content, n.Content[i], n.Content[i+1])
	}
	var errs []string
	add := func(err error) {
		if te, ok := err.(*yaml.TypeError); ok {
			errs = append(errs, te.Errors...)
		} else if err != nil {
			errs = append(errs, fmt.Sprintf("line %d: %v", n.Line, err))
		}
	}
	type plain Spec
	var p plain
	add(mine.Decode(&p))
	*s = Spec(p)
	d, ok := Lookup(s.Driver)
	if !ok {
		// The config check names the unknown driver; its keys mean nothing yet.
		s.problems = errs
		return nil
	}
	if d.Options == nil {
		for i := 0; i+1 < len(rest.Content); i += 2 {
			k := rest.Content[i]
			errs = append(errs, notTaken(k, k.Value, *s))
		}
		s.problems = errs
		return nil
	}
	t := reflect.TypeOf(d.Options)
	unknownKeys(rest, t, "", func(k *yaml.Node, path string) {
		errs = append(errs, notTaken(k, path, *s))
	})
	o := reflect.New(t)
	add(rest.Decode(o.Interface()))
	s.Options = o.Elem().Interface()
	s.problems = errs
	return nil
}

// notTaken words an unknown key: a key another driver takes is named as not this driver's,
// any other one in the yaml package's words (the config reports it as an unknown key).
func notTaken(k *yaml.Node, path string, s Spec) string {
	if path == k.Value && takenByAny(k.Value) {
		return fmt.Sprintf("line %d: device %q: the %s driver takes no key %q", k.Line, s.ID, s.Driver, k.Value)
	}
	return fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, s.Driver)
}

func takenByAny(key string) bool {
	for _, name := range Drivers() {
		d, _ := Lookup(name)
		for _, k := range d.Keys() {
			if k == key {
				return true
			}
		}
	}
	return false
}

// Unmerge returns mapping n (or the mapping alias n points at) with its merge keys
// (<<: *base) replaced by the pairs they bring that n does not set itself: the keys a device
// is given, as the config checker and the split into common and driver keys see them. A
// mapping that merges itself (&u {<<: *u}) brings nothing the second time, and each mapping
// is unmerged once however often it is merged.
func Unmerge(n *yaml.Node) *yaml.Node {
	return unmerge(n, map[*yaml.Node]*yaml.Node{})
}

// unmerge is Unmerge with done: the mappings unmerged so far (nil while one is under way).
func unmerge(n *yaml.Node, done map[*yaml.Node]*yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n == nil {
		return nil
	}
	has := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "<<" && n.Content[i].Tag != "!!str" {
			has = true
		}
	}
	if !has {
		return n
	}
	if u, ok := done[n]; ok {
		if u == nil { // n merges itself
			return &yaml.Node{Kind: yaml.MappingNode}
		}
		return u
	}
	done[n] = nil
	out := *n
	out.Content = nil
	set := map[string]bool{}
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value != "<<" || k.Tag == "!!str" {
			out.Content = append(out.Content, k, v)
			set[k.Value] = true
			continue
		}
		srcs := []*yaml.Node{v}
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, src := range srcs {
			for src.Kind == yaml.AliasNode && src.Alias != nil {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				continue
			}
			src = unmerge(src, done)
			merged = append(merged, src.Content...)
		}
	}
	// Earlier merged mappings win over later ones, and n's own keys over all of them.
	for i := 0; i+1 < len(merged); i += 2 {
		if !set[merged[i].Value] {
			set[merged[i].Value] = true
			out.Content = append(out.Content, merged[i], merged[i+1])
		}
	}
	done[n] = &out
	return &out
}

var (
	unmarshalerType    = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	oldUnmarshalerType = reflect.TypeOf((*interface {
		UnmarshalYAML(func(any) error) error
	})(nil)).Elem()
)

// unknownKeys calls bad for every mapping key under n that t has no field for (KnownFields
// for a node: yaml.Node.Decode has no such switch).
func unknownKeys(n *yaml.Node, t reflect.Type, path string, bad func(*yaml.Node, string)) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if pt := reflect.PointerTo(t); pt.Implements(unmarshalerType) || pt.Implements(oldUnmarshalerType) {
		return
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			switch {
			case k.Value == "<<":
			case !ok:
				bad(k, join(k.Value))
			default:
				unknownKeys(n.Content[i+1], ft, join(k.Value), bad)
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for i, e := range n.Content {
				unknownKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), bad)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				unknownKeys(n.Content[i+1], t.Elem(), join(n.Content[i].Value), bad)
			}
		}
	}
}

// yamlFields lists the keys of struct t as the yaml package names them, inline fields
// included.
func yamlFields(t reflect.Type, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous { // as the yaml package: embedded structs count
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				yamlFields(ft, out)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
}

// SNMPv3 holds the USM parameters of an SNMPv3 device (authPriv when both are set).
type SNMPv3 struct {
	User         string `yaml:"user"`
	AuthProtocol string `yaml:"auth_protocol"` // MD5, SHA, SHA256, SHA512
	AuthPassFile string `yaml:"auth_password_file"`
	PrivProtocol string `yaml:"priv_protocol"` // DES, AES, AES256
	PrivPassFile string `yaml:"priv_password_file"`
	// AuthPass and PrivPass may be given inline for tests and demos; files are preferred.
	AuthPass string `yaml:"auth_password"`
	PrivPass string `yaml:"priv_password"`
	// EngineID (hex) is the sending engine's id, for the trap receiver's v3 users: a trap's
	// sender is the authoritative engine (snmptrapd's createUser -e).
	EngineID string `yaml:"engine_id"`
}

// Value is a number or a word in a sim's values or script.
type Value struct {
	Num    float64
	Text   string
	IsText bool
}

// UnmarshalYAML accepts a number or a string.
func (v *Value) UnmarshalYAML(unmarshal func(any) error) error {
	var f float64
	if err := unmarshal(&f); err == nil {
		*v = Value{Num: f}
		return nil
	}
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	*v = Value{Text: s, IsText: true}
	return nil
}

// JSON is the value as it goes into JSON.
func (v Value) JSON() any {
	if v.IsText {
		return v.Text
	}
	return v.Num
}

// Keys lists the option keys (YAML names) the driver takes besides the common ones, sorted.
func (d Driver) Keys() []string {
	if d.Options == nil {
		return nil
	}
	fields := map[string]reflect.Type{}
	yamlFields(reflect.TypeOf(d.Options), fields)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
