package sensors

import "time"

// Spec is one entry of the config's devices list (CONTRACT.md §2). It is the union of every
// driver's keys; each Driver names the keys it accepts, and the config checker refuses the
// others, with their line.
type Spec struct {
	ID     string        `yaml:"id"`
	Driver string        `yaml:"driver"`
	Poll   time.Duration `yaml:"poll"`
	// Timeout bounds one poll; default: the smaller of Poll and 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Description is free text shown on the page and as the NUT UPS description.
	Description string `yaml:"description"`

	// Serial.
	Port string `yaml:"port"`
	Baud int    `yaml:"baud"`

	// SNMP.
	Target    string       `yaml:"target"`
	Community string       `yaml:"community"`
	Version   string       `yaml:"version"` // 1, 2c, 3
	V3        *SNMPv3      `yaml:"v3"`
	Metrics   []MetricSpec `yaml:"metrics"`

	// I2C.
	Bus        string  `yaml:"bus"`
	Address    int     `yaml:"address"`
	ShuntOhms  float64 `yaml:"shunt_ohms"`
	MaxCurrent float64 `yaml:"max_current"`

	// GPIO.
	Pin       string        `yaml:"pin"`
	Active    string        `yaml:"active"` // high, low
	Debounce  time.Duration `yaml:"debounce"`
	SafeState string        `yaml:"safe_state"` // on, off

	// Modbus (sensors/modbus checks them).
	UnitID    int              `yaml:"unit_id"`
	Profile   string           `yaml:"profile"`
	Registers []RegisterSpec   `yaml:"registers"`
	Parity    string           `yaml:"parity"`     // none, even, odd
	StopBits  int              `yaml:"stop_bits"`  // 1, 2
	WordOrder string           `yaml:"word_order"` // high_first, low_first: the device's default
	Transport string           `yaml:"transport"`  // with target: tcp, rtu_over_tcp
	Relay     *ModbusRelaySpec `yaml:"relay"`

	// Simulated twins.
	Values map[string]Value `yaml:"values"`
	Script []ScriptStep     `yaml:"script"`
	Loop   bool             `yaml:"loop"`
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

// MetricSpec is one OID of a generic snmp device.
type MetricSpec struct {
	Name  string  `yaml:"name"`
	OID   string  `yaml:"oid"`
	Unit  string  `yaml:"unit"`
	Scale float64 `yaml:"scale"`
}

// RegisterSpec is one value of a generic modbus device.
type RegisterSpec struct {
	Name      string  `yaml:"name"`
	Table     string  `yaml:"table"`
	Address   int     `yaml:"address"`
	Type      string  `yaml:"type"`
	Count     int     `yaml:"count"`
	WordOrder string  `yaml:"word_order"`
	Unit      string  `yaml:"unit"`
	Scale     float64 `yaml:"scale"`
	Offset    float64 `yaml:"offset"`
}

// ModbusRelaySpec makes a modbus device switchable: a coil, or a holding register written
// with On or Off.
type ModbusRelaySpec struct {
	Table   string `yaml:"table"`
	Address int    `yaml:"address"`
	On      *int   `yaml:"on"`
	Off     *int   `yaml:"off"`
}

// ScriptStep is one step of a simulated device's story: at At after start (or after the
// previous loop), set the listed metrics.
type ScriptStep struct {
	At  time.Duration    `yaml:"at"`
	Set map[string]Value `yaml:"set"`
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
