package sensors_test

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/rackwatch/rackwatch/sensors"
)

type inner struct {
	A int `yaml:"a"`
}

type nested struct {
	Inner inner            `yaml:"inner"`
	List  []inner          `yaml:"list"`
	Map   map[string]inner `yaml:"map"`
	Value sensors.Value    `yaml:"value"` // decodes itself: not looked into
}

type spectestOptions struct {
	nested `yaml:",inline"`
	Name   string `yaml:"name"`
}

func init() {
	sensors.Register(sensors.Driver{Name: "spectest.nested", Class: sensors.ClassOther, Options: spectestOptions{}})
	sensors.Register(sensors.Driver{Name: "spectest.bare", Class: sensors.ClassOther})
	sensors.Register(sensors.Driver{Name: "spectest.perdevice", Class: sensors.ClassPower, Options: spectestOptions{},
		DeviceClass: func(s sensors.Spec) sensors.Class {
			if sensors.Opts[spectestOptions](s).Name == "ups" {
				return sensors.ClassUPS
			}
			return ""
		}})
}

// TestSpecDecode: common keys to Spec, the rest to the driver's options; every key the
// options lack, however deep, is a problem at its own line.
func TestSpecDecode(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		problems  []string
	}{
		{"good", "{id: x, driver: spectest.nested, poll: 2s, name: n, inner: {a: 1}, list: [{a: 2}], map: {k: {a: 3}}, value: OB}", nil},
		{"top", "id: x\ndriver: spectest.nested\nnome: n\n", []string{"line 3: field nome not found"}},
		{"deep", "id: x\ndriver: spectest.nested\ninner:\n  b: 1\nlist:\n  - {a: 1}\n  - {c: 1}\nmap:\n  k: {d: 1}\n",
			[]string{"line 4: field b not found", "line 7: field c not found", "line 9: field d not found"}},
		{"type", "id: x\ndriver: spectest.nested\ninner: {a: many}\n", []string{"line 3: cannot unmarshal"}},
		{"bare", "id: x\ndriver: spectest.bare\nname: n\n", []string{"line 3: device \"x\": the spectest.bare driver takes no key \"name\""}},
		{"unknown driver", "id: x\ndriver: nosuch\nwhatever: 1\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sensors.Spec
			if err := yaml.Unmarshal([]byte(tc.src), &s); err != nil {
				t.Fatal(err)
			}
			got := s.Problems()
			if len(got) != len(tc.problems) {
				t.Fatalf("problems %q, want %q", got, tc.problems)
			}
			for i, want := range tc.problems {
				if !strings.HasPrefix(got[i], want) {
					t.Errorf("problem %q, want %q…", got[i], want)
				}
			}
			if tc.name == "good" {
				o := sensors.Opts[spectestOptions](s)
				if s.ID != "x" || s.Poll.Seconds() != 2 || o.Name != "n" || o.Inner.A != 1 || o.List[0].A != 2 || o.Map["k"].A != 3 || o.Value.Text != "OB" {
					t.Errorf("decoded %+v %+v", s, o)
				}
			}
		})
	}
}

func TestDriverKeysAndClass(t *testing.T) {
	d, _ := sensors.Lookup("spectest.nested")
	if got := strings.Join(d.Keys(), " "); got != "inner list map name value" {
		t.Errorf("keys %q", got)
	}
	if sensors.ClassOf("spectest.nested") != sensors.ClassOther || sensors.ClassOf("nosuch") != "" {
		t.Error("ClassOf")
	}
	ups := sensors.Spec{Driver: "spectest.perdevice", Options: spectestOptions{Name: "ups"}}
	meter := sensors.Spec{Driver: "spectest.perdevice", Options: spectestOptions{Name: "meter"}}
	if sensors.SpecClass(ups) != sensors.ClassUPS || sensors.SpecClass(meter) != sensors.ClassPower || sensors.SpecClass(sensors.Spec{Driver: "nosuch"}) != "" {
		t.Error("SpecClass")
	}
	if o := sensors.Opts[spectestOptions](sensors.Spec{}); o.Name != "" {
		t.Error("Opts of a spec without options")
	}
	defer func() {
		if recover() == nil {
			t.Error("a driver without a class was registered")
		}
	}()
	sensors.Register(sensors.Driver{Name: "spectest.classless"})
}
