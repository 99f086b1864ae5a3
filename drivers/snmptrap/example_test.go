package snmptrap_test

import (
	"context"
	"log/slog"

	"github.com/rackwatch/rackwatch/drivers/snmp"
	"github.com/rackwatch/rackwatch/drivers/snmptrap"
)

// A receiver on the standard trap port that accepts the community "public" and one v3 user,
// and turns UPS-MIB traps into log lines.
func ExampleListen() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := snmptrap.Listen(ctx, "0.0.0.0:162", snmptrap.Config{
		Communities: []string{"public"},
		Users: []snmp.USM{{
			User: "ups2", EngineID: "0x80001f8880e9630000d61ff449",
			AuthProtocol: "SHA", AuthPass: "…", PrivProtocol: "AES", PrivPass: "…",
		}},
	}, func(t snmptrap.Trap) {
		if t.Name == "upsTrapOnBattery" {
			slog.Warn("UPS on battery", "from", t.Source, "alarm", t.Alarm)
		}
	})
	if err != nil {
		slog.Error("traps", "err", err)
		return
	}
	<-r.Done()
}
