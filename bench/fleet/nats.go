package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// natsNode is one nats-server of the cluster: a NATS client port (unused by the fleet, but
// nats-server always listens on one), a route port, an MQTT port and a monitoring port.
type natsNode struct {
	name                      string
	conf, log                 string
	client, route, mqtt, http int
	cmd                       *exec.Cmd
	exited                    chan struct{}
}

func (n *natsNode) mqttURL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", n.mqtt) }

// freePorts returns k ports that were free a moment ago.
func freePorts(k int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// startNATS starts a three-node cluster in dir. NATS's MQTT needs JetStream (sessions,
// QoS 1 messages and retained messages live in streams), which in a cluster needs a
// server_name per node; the MQTT streams are created with three replicas, so the two nodes
// left keep a quorum when one is killed.
func startNATS(dir string) ([]*natsNode, error) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nats-server"); err != nil {
			return nil, fmt.Errorf("nats-server not found (Debian package nats-server): %w", err)
		}
	}
	ports, err := freePorts(12)
	if err != nil {
		return nil, err
	}
	nodes := make([]*natsNode, 3)
	for i := range nodes {
		nodes[i] = &natsNode{name: fmt.Sprintf("nats%d", i+1), client: ports[4*i], route: ports[4*i+1], mqtt: ports[4*i+2], http: ports[4*i+3]}
	}
	for i, n := range nodes {
		var routes []string
		for j, o := range nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.route))
			}
		}
		nd := filepath.Join(dir, n.name)
		if err := os.MkdirAll(filepath.Join(nd, "jetstream"), 0o755); err != nil {
			return nil, err
		}
		n.conf, n.log = filepath.Join(nd, "nats.conf"), filepath.Join(nd, "nats.log")
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
log_file: %q
jetstream { store_dir: %q }
cluster {
  name: rackwatch-fleet
  listen: "127.0.0.1:%d"
  routes: [%s]
}
mqtt {
  listen: "127.0.0.1:%d"
  stream_replicas: 3
}
`, n.name, n.client, n.http, n.log, filepath.Join(nd, "jetstream"), n.route, strings.Join(routes, ", "), n.mqtt)
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			return nil, err
		}
	}
	for _, n := range nodes {
		if err := n.start(bin); err != nil {
			stopNATS(nodes)
			return nil, err
		}
	}
	for _, n := range nodes {
		if err := n.healthy(60 * time.Second); err != nil {
			stopNATS(nodes)
			return nil, err
		}
	}
	return nodes, nil
}

func (n *natsNode) start(bin string) error {
	n.cmd = exec.Command(bin, "-c", n.conf)
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(n.cmd, n.exited)
	return nil
}

// healthy waits until the node's /healthz (JetStream included) answers 200 and its MQTT port
// accepts connections.
func (n *natsNode) healthy(within time.Duration) error {
	ok := waitFor(within, func() bool {
		select {
		case <-n.exited:
			return true
		default:
		}
		r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.http))
		if err != nil {
			return false
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			return false
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.mqtt))
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	select {
	case <-n.exited:
		return fmt.Errorf("%s exited (see %s)", n.name, n.log)
	default:
	}
	if !ok {
		return fmt.Errorf("%s not healthy after %v (see %s)", n.name, within, n.log)
	}
	return nil
}

// kill is a crash: SIGKILL, no goodbye to the cluster or the clients.
func (n *natsNode) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}

func stopNATS(nodes []*natsNode) {
	for _, n := range nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			n.cmd.Process.Signal(os.Interrupt)
			select {
			case <-n.exited:
			case <-time.After(10 * time.Second):
				n.cmd.Process.Kill()
				<-n.exited
			}
		}
	}
}

// mqttClients is how many MQTT clients the node holds (its /connz, which lists client
// connections, not routes).
func (n *natsNode) mqttClients() (int, error) {
	r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz?limit=100000", n.http))
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	var cz struct {
		Conns []struct {
			MQTTClient string `json:"mqtt_client"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(r.Body).Decode(&cz); err != nil {
		return 0, err
	}
	k := 0
	for _, c := range cz.Conns {
		if c.MQTTClient != "" {
			k++
		}
	}
	return k, nil
}

func quantile(ts []time.Time, from time.Time, q float64) float64 {
	i := int(q*float64(len(ts)) + 0.999999) // the smallest index with at least q of the values at or below it
	i = min(max(i-1, 0), len(ts)-1)
	return ts[i].Sub(from).Seconds()
}

// retainedOnline counts the nodes whose retained R/state says online, as a new subscriber
// sees it.
func retainedOnline(urls []string, n int) (int, []string, error) {
	var mu sync.Mutex
	online := map[string]bool{}
	o := mqtt.NewClientOptions().SetClientID(fmt.Sprintf("fleet-retained-%d", time.Now().UnixNano())).SetCleanSession(true)
	for _, u := range urls {
		o.AddBroker(u)
	}
	c := mqtt.NewClient(o)
	if t := c.Connect(); t.Wait() && t.Error() != nil {
		return 0, nil, t.Error()
	}
	defer c.Disconnect(250)
	t := c.Subscribe("rackwatch/fleet/+/state", 1, func(_ mqtt.Client, m mqtt.Message) {
		var p struct {
			State string `json:"state"`
		}
		json.Unmarshal(m.Payload(), &p)
		mu.Lock()
		online[strings.Split(m.Topic(), "/")[2]] = p.State == "online"
		mu.Unlock()
	})
	if t.Wait() && t.Error() != nil {
		return 0, nil, t.Error()
	}
	count := func() (k, all int, off []string) {
		mu.Lock()
		defer mu.Unlock()
		for node, on := range online {
			if on {
				k++
			} else {
				off = append(off, node)
			}
		}
		return k, len(online), off
	}
	waitFor(20*time.Second, func() bool { _, all, _ := count(); return all >= n })
	time.Sleep(time.Second)
	k, _, off := count()
	return k, off, nil
}

// runNATS is the fleet against a three-node NATS cluster. Site i lists the three nodes
// starting at node i mod 3 (a third of the sites on each, as a load balancer or per-site
// config would spread them; the uplink always prefers the first broker it lists). The
// watcher lists nodes 2 and 3 only, so the kill of node 1 tests the sites' path, not the
// watcher's. Node 1 is SIGKILLed once all are online and started again with its store once
// no site has come online for 10 s (and at least `down` after the kill); its sites go to
// their next broker and come back to node 1 within the uplink's 30 s probe interval.
func runNATS(n int, telemetry, measure, down time.Duration) error {
	dir, err := os.MkdirTemp("", "rackwatch-fleet-nats-")
	if err != nil {
		return err
	}
	if os.Getenv("FLEET_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "fleet: keeping", dir, "(FLEET_KEEP)")
	}
	nodes, err := startNATS(dir)
	if err != nil {
		return err
	}
	defer stopNATS(nodes)
	bin := nodes[0].cmd.Path
	ver, _ := exec.Command(bin, "--version").Output()
	fmt.Printf("fleet: %d sites, telemetry every %v, %s cluster of 3 (MQTT on %d, %d, %d; JetStream, stream_replicas 3)\n",
		n, telemetry, strings.TrimSpace(string(ver)), nodes[0].mqtt, nodes[1].mqtt, nodes[2].mqtt)

	w := newWatcher()
	w.byTS = true
	so := mqtt.NewClientOptions().SetClientID("fleet-watcher").
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetOrderMatters(false).SetDefaultPublishHandler(w.handle).
		SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe("rackwatch/fleet/#", 1, w.handle) })
	so.AddBroker(nodes[1].mqttURL()).AddBroker(nodes[2].mqttURL())
	sub := mqtt.NewClient(so)
	// The cluster's JetStream meta leader may still be being elected: MQTT connects fail
	// until the MQTT streams can be created.
	var cerr error
	if !waitFor(60*time.Second, func() bool {
		t := sub.Connect()
		t.Wait()
		cerr = t.Error()
		if cerr != nil {
			time.Sleep(500 * time.Millisecond)
		}
		return cerr == nil
	}) {
		return fmt.Errorf("subscriber: %w", cerr)
	}
	defer sub.Disconnect(250)
	time.Sleep(time.Second) // the SUBSCRIBE from the connect handler

	f := &fleet{dir: dir, n: n}
	start := time.Now()
	w.reset(start.Add(-time.Second))
	if err := f.start(telemetry, func(i int) []string {
		var bs []string
		for k := range nodes {
			bs = append(bs, nodes[(i+k)%len(nodes)].mqttURL())
		}
		return bs
	}); err != nil {
		return err
	}
	defer f.stop()

	if err := onlineAndRate(w, n, start, 2*time.Minute, measure, "the cluster"); err != nil {
		return err
	}

	var per []string
	for _, nd := range nodes {
		k, err := nd.mqttClients()
		if err != nil {
			return fmt.Errorf("%s /connz: %w", nd.name, err)
		}
		per = append(per, fmt.Sprintf("%s %d", nd.name, k))
	}
	affected, _ := nodes[0].mqttClients()
	fmt.Printf("clients per node:  %s (the watcher on nats2)\n", strings.Join(per, ", "))

	perNode := func() string {
		var per []string
		for _, nd := range nodes {
			k, _ := nd.mqttClients()
			per = append(per, fmt.Sprintf("%s %d", nd.name, k))
		}
		return strings.Join(per, ", ")
	}
	// settle waits until no site has come online again for 10 s: a node's death or return
	// moves JetStream stream leaders, and NATS closes MQTT clients on every node whose QoS 1
	// publish waits on a leader for 4 s, so more sites reconnect than the node held.
	settle := func() {
		last, at := -1, time.Now()
		waitFor(2*time.Minute, func() bool {
			if k := len(w.onlineTimes()); k != last {
				last, at = k, time.Now()
			}
			return time.Since(at) > 10*time.Second
		})
	}

	before := w.telemetryCount()
	killAt := time.Now()
	w.reset(killAt)
	nodes[0].kill()
	ok := waitFor(2*time.Minute, func() bool { return len(w.onlineTimes()) >= affected })
	if !ok {
		return fmt.Errorf("only %d sites back after 2 min, %d were on %s", len(w.onlineTimes()), affected, nodes[0].name)
	}
	settle()
	ons := w.onlineTimes()
	fmt.Printf("node killed:       %s (SIGKILL) held %d sites; %d sites came online again (on any node): %s after the kill\n",
		nodes[0].name, affected, len(ons), spread(ons, killAt))
	fmt.Printf("clients per node:  %s\n", perNode())
	fmt.Printf("killed_node_sites=%d\nfailover_reconnected=%d\nfailover_p50_s=%.3f\nfailover_p99_s=%.3f\nfailover_last_s=%.3f\n",
		affected, len(ons), quantile(ons, killAt, 0.5), quantile(ons, killAt, 0.99), quantile(ons, killAt, 1))

	time.Sleep(time.Until(killAt.Add(down)))
	restartAt := time.Now()
	w.reset(restartAt)
	if err := nodes[0].start(bin); err != nil {
		return err
	}
	// The sites only need its MQTT port; /healthz (JetStream caught up) is reported, not
	// waited for: a node whose JetStream never catches up shows as sites not coming back.
	if !waitFor(time.Minute, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", nodes[0].mqtt))
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		return fmt.Errorf("%s does not listen on its MQTT port a minute after its start (see %s)", nodes[0].name, nodes[0].log)
	}
	var healthyAt time.Time
	var hmu sync.Mutex
	go func() {
		if nodes[0].healthy(3*time.Minute) == nil {
			hmu.Lock()
			healthyAt = time.Now()
			hmu.Unlock()
		}
	}()
	healthy := func() string {
		hmu.Lock()
		defer hmu.Unlock()
		if healthyAt.IsZero() {
			why := "?"
			if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", nodes[0].http)); err == nil {
				b := make([]byte, 300)
				k, _ := r.Body.Read(b)
				r.Body.Close()
				why = strings.TrimSpace(string(b[:k]))
			}
			return "not healthy yet: " + why
		}
		return fmt.Sprintf("healthy %.1f s after its start", healthyAt.Sub(restartAt).Seconds())
	}
	// The sites that list node 1 first find it again with their next probe and move back.
	ok = waitFor(2*time.Minute, func() bool {
		k, _ := nodes[0].mqttClients()
		return k >= affected
	})
	if !ok {
		return fmt.Errorf("only %s 2 min after %s's restart (%s), %d list it first", perNode(), nodes[0].name, healthy(), affected)
	}
	settle()
	ons = w.onlineTimes()
	fmt.Printf("node restarted:    down %.1f s, %s; %d sites came online again since (%d list it first): %s after its start\n",
		restartAt.Sub(killAt).Seconds(), healthy(), len(ons), affected, spread(ons, restartAt))
	fmt.Printf("clients per node:  %s\n", perNode())
	fmt.Printf("return_reconnected=%d\nreturn_p50_s=%.3f\nreturn_p99_s=%.3f\nreturn_last_s=%.3f\n",
		len(ons), quantile(ons, restartAt, 0.5), quantile(ons, restartAt, 0.99), quantile(ons, restartAt, 1))
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.mqttURL())
	}
	k, off, err := retainedOnline(urls, n)
	if err != nil {
		return fmt.Errorf("retained check: %w", err)
	}
	for _, node := range off {
		w.mu.Lock()
		fmt.Printf("  %s retained offline; the R/state messages it sent: %v\n", node, w.states[node])
		w.mu.Unlock()
	}
	fmt.Printf("retained state:    %d of %d sites' retained R/state say online (a new subscriber's view)\n", k, n)
	fmt.Printf("retained_online=%d\n", k)

	waitFor(2*time.Minute, func() bool { return w.telemetryCount() > before+2*n })
	err = f.finish(w)
	if k < n {
		err = errors.Join(err, fmt.Errorf("%d sites' retained state is not online", n-k))
	}
	return err
}
