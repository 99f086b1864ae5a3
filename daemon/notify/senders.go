package notify

import "fmt"

func newSender(t Target, cfg Config, opt Options) (sender, error) {
	switch t.Type {
	case "webhook":
		return newWebhook(t)
	case "syslog":
		return newSyslog(t)
	case "snmp":
		return newSNMP(t)
	case "email":
		return newEmail(t)
	}
	return nil, fmt.Errorf("type %q: not supported", t.Type)
}
