// Command standin is a stand-in for rackwatch used only while developing the firmware image
// before the daemon builds: it reads web.listen from -config and serves a status page there.
// The image tests use the real daemon; nothing ships this.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"

	"go.yaml.in/yaml/v3"
)

func main() {
	config := flag.String("config", "", "config file")
	flag.Parse()
	var c struct {
		Web struct {
			Listen string `yaml:"listen"`
		} `yaml:"web"`
	}
	b, err := os.ReadFile(*config)
	if err != nil {
		log.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "standin pid %d\n", os.Getpid())
	})
	log.Printf("standin listening on %s", c.Web.Listen)
	log.Fatal(http.ListenAndServe(c.Web.Listen, nil))
}
