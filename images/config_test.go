// Package images holds no code of its own: the firmware tools live in its subfolders. This
// test checks that the configs the image and the .deb install are valid for the daemon they
// ship with.
package images_test

import (
	"testing"

	"github.com/rackwatch/rackwatch/daemon/config"
	_ "github.com/rackwatch/rackwatch/sensors/all"
)

func TestShippedConfigs(t *testing.T) {
	for _, path := range []string{"rackwatch-image.yaml", "deb/rackwatch.yaml"} {
		c, err := config.Load(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if c.Site == "" || c.Node == "" || len(c.Devices) == 0 {
			t.Errorf("%s: site %q node %q, %d devices", path, c.Site, c.Node, len(c.Devices))
		}
	}
}
