package site

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/rackwatch/rackwatch/daemon/config"
	"github.com/rackwatch/rackwatch/daemon/update"
	"github.com/rackwatch/rackwatch/internal/bootstate"
	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/minisign"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// firmwareSite runs a site with the updater options uo; caFile and extra (YAML) are optional.
func firmwareSite(t *testing.T, uo update.Options, caFile, extra string) *Site {
	t.Helper()
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	if caFile != "" {
		caFile = ", ca_file: " + caFile
	}
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`site: test
node: rack1
data_dir: %s
web: {listen: "127.0.0.1:0", users_file: %s}
update: {commit_after: 1s, max_bytes: 2097152%s}
devices:
  - {id: inlet, driver: sim.env, poll: 200ms}
%s`, filepath.Join(dir, "data"), users, caFile, extra)))
	if err != nil {
		t.Fatal(err)
	}
	return runSiteOpts(t, cfg, Options{Version: "v1", Update: uo})
}

func postUpdate(t *testing.T, s *Site, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.WebAddr().String()+"/api/v1/update", bytes.NewReader(body))
	req.SetBasicAuth("alice", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func devBundle(t *testing.T, version string, epoch int64, img []byte) []byte {
	kb, _ := os.ReadFile("../../images/keys/dev.key")
	k, err := minisign.ParseSecretKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	var part bytes.Buffer
	p, _ := fwbundle.CompressPart(fwbundle.SlotPart, bytes.NewReader(img), &part)
	m, _ := fwbundle.EncodeManifest(fwbundle.Manifest{Format: 1, Board: "rackwatch-arm64", Version: version, Epoch: epoch, Parts: []fwbundle.Part{p}})
	sig, _ := fwbundle.SignManifest(k, m)
	var out bytes.Buffer
	if err := fwbundle.Write(&out, m, sig, []io.Reader{&part}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// fakeBoard is the firmware image's parts as files: slot B, the boot dir, keys,
// firmware.json; reboots hears of a reboot.
func fakeBoard(t *testing.T) (update.Options, string, chan struct{}) {
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot")
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	os.MkdirAll(boot, 0o755)
	bootstate.Default().Save(boot)
	pub, _ := os.ReadFile("../../images/keys/dev.pub")
	os.WriteFile(filepath.Join(dir, "keys", "dev.pub"), pub, 0o644)
	os.WriteFile(filepath.Join(dir, "firmware.json"), []byte(`{"version":"v1","board":"rackwatch-arm64","epoch":1000}`), 0o644)
	slotB := filepath.Join(dir, "b.img")
	os.WriteFile(slotB, make([]byte, 1<<20), 0o644)
	reboots := make(chan struct{}, 1)
	uo := update.Options{Slot: "a", BootDir: boot, FirmwareFile: filepath.Join(dir, "firmware.json"),
		KeysDir: filepath.Join(dir, "keys"), SpoolDir: filepath.Join(dir, "spool"), BootID: "b1",
		Device:      func(slot string) (string, error) { return slotB, nil },
		Reboot:      func() error { reboots <- struct{}{}; return nil },
		RebootDelay: time.Millisecond}
	return uo, slotB, reboots
}

// POST /api/v1/update on the image: a bad bundle is refused (422, slot untouched), a good
// one is written and the board rebooted; status, the page and the audit trail say so.
func TestWebUpdate(t *testing.T) {
	uo, slotB, reboots := fakeBoard(t)
	s := firmwareSite(t, uo, "", "")
	fw := status(t, s)["firmware"].(map[string]any)
	if fw["version"] != "v1" || fw["slot"] != "a" || fw["committed"] != true || fw["updates"] != "ab" {
		t.Fatalf("firmware %v", fw)
	}
	img := bytes.Repeat([]byte("v2 slot "), 100000)
	good := devBundle(t, "v2", 2000, img)
	if code, m := postUpdate(t, s, good[:len(good)/2]); code != http.StatusUnprocessableEntity {
		t.Fatalf("truncated: %d %v", code, m)
	}
	if b, _ := os.ReadFile(slotB); !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Fatal("slot written by a refused bundle")
	}
	code, m := postUpdate(t, s, good)
	if code != http.StatusOK || m["version"] != "v2" || m["slot"] != "b" {
		t.Fatalf("good: %d %v", code, m)
	}
	<-reboots
	if b, _ := os.ReadFile(slotB); !bytes.HasPrefix(b, img) {
		t.Fatal("slot b does not hold the image")
	}
	fw = status(t, s)["firmware"].(map[string]any)
	if lu, _ := fw["last_update"].(map[string]any); lu["outcome"] != "installed" || lu["version"] != "v2" {
		t.Fatalf("firmware %v", fw)
	}
	// The page shows the version, the slot and the last update's outcome.
	resp, err := http.Get("http://" + s.WebAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(page, []byte(`id="firmware"`)) || !bytes.Contains(page, []byte("v1 · slot a")) || !bytes.Contains(page, []byte(">installed</b>")) {
		t.Errorf("the page does not show the firmware: %s", page)
	}
	recs := s.sh.audit
	all, err := recs.Records(10)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range all {
		if r.Action == "firmware.update" {
			actions = append(actions, r.Actor+" "+r.Detail)
		}
	}
	if len(actions) != 2 || !strings.HasPrefix(actions[0], "alice installed: v2") || !strings.HasPrefix(actions[1], "alice refused") {
		t.Fatalf("audit: %q", actions)
	}
}

// Off the image the updater refuses, and status says how the daemon is updated.
func TestWebUpdateNotImage(t *testing.T) {
	s := firmwareSite(t, update.Options{DpkgList: filepath.Join(t.TempDir(), "none")}, "", "")
	if fw := status(t, s)["firmware"].(map[string]any); fw["updates"] != "none" || fw["version"] != "v1" {
		t.Fatalf("firmware %v", fw)
	}
	if code, m := postUpdate(t, s, []byte("x")); code != http.StatusNotImplemented || !strings.Contains(m["error"].(string), "not updated by rackwatch") {
		t.Fatalf("%d %v", code, m)
	}
}

// The MQTT update command: the site downloads the bundle over HTTPS (trusting
// update.ca_file), checks the command's sha256, installs it and replies ok; a wrong sha256 is
// refused with the slot untouched. R/state carries the firmware object.
func TestMQTTUpdate(t *testing.T) {
	pub := testpeer.Require(t, "mosquitto_pub", "mosquitto-clients")
	m := testpeer.StartMosquitto(t)
	sub := m.Subscribe(t, "rackwatch/test/rack1/#", "")
	uo, slotB, reboots := fakeBoard(t)
	img := bytes.Repeat([]byte("v2 over mqtt "), 50000)
	bundle := devBundle(t, "v2", 2000, img)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bundle) }))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	firmwareSite(t, uo, ca, fmt.Sprintf("mqtt: {brokers: [%q]}\n", m.URL))
	testpeer.Eventually(t, 30*time.Second, "R/state with firmware", func() bool {
		return len(sub.Matching("/state", `"state":"online"`, `"firmware":{"version":"v1","slot":"a","committed":true,"updates":"ab"}`)) > 0
	})
	sum := sha256.Sum256(bundle)
	send := func(id, sha string) map[string]any {
		t.Helper()
		payload := fmt.Sprintf(`{"id":%q,"action":"update","url":%q,"sha256":%q}`, id, srv.URL+"/v2.update", sha)
		if out, err := exec.Command(pub, "-h", "127.0.0.1", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", "rackwatch/test/rack1/cmd", "-m", payload).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v %s", err, out)
		}
		var reply map[string]any
		testpeer.Eventually(t, 60*time.Second, "the reply to "+id, func() bool {
			for _, p := range sub.Matching("/cmd/reply", `"id":"`+id+`"`) {
				return json.Unmarshal([]byte(p), &reply) == nil
			}
			return false
		})
		return reply
	}
	if r := send("u1", strings.Repeat("0", 64)); r["ok"] != false || !strings.Contains(fmt.Sprint(r["error"]), "sha256") {
		t.Fatalf("reply to a wrong sha256: %v", r)
	}
	if b, _ := os.ReadFile(slotB); !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Fatal("slot written by a refused download")
	}
	if r := send("u2", hex.EncodeToString(sum[:])); r["ok"] != true {
		t.Fatalf("reply to a good update: %v", r)
	}
	<-reboots
	if b, _ := os.ReadFile(slotB); !bytes.HasPrefix(b, img) {
		t.Fatal("slot b does not hold the image")
	}
}
