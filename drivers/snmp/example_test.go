package snmp_test

import (
	"context"
	"fmt"
	"time"

	"github.com/rackwatch/rackwatch/drivers/snmp"
)

// Reading two objects of a UPS in one GET; an object the agent lacks is Missing, not an error.
func ExampleClient_Get() {
	c, err := snmp.New(snmp.Config{Target: "192.0.2.10:161", Community: "public", Version: "2c"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vals, err := c.Get(ctx, []string{"1.3.6.1.2.1.33.1.2.4.0", "1.3.6.1.2.1.33.1.4.1.0"})
	if err != nil {
		fmt.Println("UPS does not answer:", err)
		return
	}
	if v := vals["1.3.6.1.2.1.33.1.2.4.0"]; !v.Missing {
		fmt.Println("charge", v.Num, "%")
	}
}
