package main

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"golang.org/x/crypto/bcrypt"

	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/minisign"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// The update tests run the firmware image X (the test image, "test-x") in QEMU and update it
// through POST /api/v1/update with bundles built here from slot images of other versions, as
// `make update` builds them. They check what the board does by itself: reboot into the new
// slot, commit after update.commit_after, come back to the old slot when the new one fails.

const dataPart = 4 // rackwatch-data in the GPT

// updateConfig is the site config the tests put on the data partition: a login for the
// update and a short commit_after.
func updateConfig(commitAfter string) []byte {
	return []byte(`site: upd
node: qemu
data_dir: /data/rackwatch
web: {listen: "0.0.0.0:80", users_file: /data/users}
update: {commit_after: ` + commitAfter + `}
devices:
  - {id: inlet, driver: sim.env, poll: 1s, values: {temperature: 24.5}}
`)
}

// setDataFile replaces a file of an image's data partition.
func setDataFile(t *testing.T, img, name string, data []byte) {
	t.Helper()
	d, err := diskfs.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(dataPart)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("/"+name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// updateImage is a copy of the test image set up for the update tests.
func updateImage(t *testing.T, o options, commitAfter string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "update.img")
	sparseCopy(t, o.Out, img)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	setDataFile(t, img, "users", []byte("admin:"+string(hash)+"\n"))
	setDataFile(t, img, "rackwatch.yaml", updateConfig(commitAfter))
	// A rackwatch that hangs before READY is caught sooner than the default 120 s.
	setBootFile(t, img, "cmdline.txt", cmdlineFile(defaultCmdline+" rackwatch.start_timeout=40"))
	return img
}

// slotHash is the SHA-256 of a partition's bytes in the image file, read on the host.
func slotHash(t *testing.T, img string, index int) string {
	t.Helper()
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := d.GetPartitionTable()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := pt.GetPartitions()[index-1]
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, p.GetStart(), p.GetSize())); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Bundles are built at most once per test binary, each when a test first needs it.
var (
	bundleMu sync.Mutex
	bundles  = map[string]*builtBundle{}
)

type builtBundle struct {
	once sync.Once
	file string
	err  error
}

// testBundle returns the bundle file of version name: "test-x" is the test image's own slot
// A (read from the image), "test-y" the same firmware as version y, "test-exit1" and
// "test-hang" slots whose rackwatch exits at start or never gets ready. The slot images are
// built by mkimage as `make update` builds them, and signed with the development key.
func testBundle(t *testing.T, name string) []byte {
	t.Helper()
	o := artifacts(t)
	root := moduleRoot(t)
	bundleMu.Lock()
	b := bundles[name]
	if b == nil {
		b = &builtBundle{}
		bundles[name] = b
	}
	bundleMu.Unlock()
	b.once.Do(func() {
		dir := filepath.Join(buildDir, "bundles")
		if b.err = os.MkdirAll(dir, 0o755); b.err != nil {
			return
		}
		slot := filepath.Join(dir, name+".slot")
		defer os.Remove(slot)
		if name == "test-x" {
			b.err = extractPartition(o.Out, 2, slot)
		} else {
			so := o
			so.Version, so.RackwatchB, so.SlotOut = name, "", slot
			if prog := strings.TrimPrefix(name, "test-"); prog == "exit1" || prog == "hang" {
				so.Rackwatch = filepath.Join(dir, prog)
				if b.err = crossBuild(root, "./images/mkimage/testdata/"+prog, so.Rackwatch); b.err != nil {
					return
				}
			}
			_, b.err = build(so)
		}
		if b.err != nil {
			return
		}
		b.file = filepath.Join(dir, name+".update")
		b.err = makeBundle(root, slot, name, "rackwatch-arm64", o.Epoch, b.file)
	})
	if b.err != nil {
		t.Fatalf("build bundle %s: %v", name, b.err)
	}
	return readFile(t, b.file)
}

// extractPartition copies partition index of img to out.
func extractPartition(img string, index int, out string) error {
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return err
	}
	pt, err := d.GetPartitionTable()
	d.Close()
	if err != nil {
		return err
	}
	p := pt.GetPartitions()[index-1]
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, io.NewSectionReader(f, p.GetStart(), p.GetSize())); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func devSecretKey(root string) (minisign.SecretKey, error) {
	b, err := os.ReadFile(filepath.Join(root, "images/keys/dev.key"))
	if err != nil {
		return minisign.SecretKey{}, err
	}
	return minisign.ParseSecretKey(b)
}

// makeBundle is images/mkupdate's build, for a slot image file, with fast compression.
func makeBundle(root, slot, version, board string, epoch int64, out string) error {
	k, err := devSecretKey(root)
	if err != nil {
		return err
	}
	raw, err := os.Open(slot)
	if err != nil {
		return err
	}
	defer raw.Close()
	var part bytes.Buffer
	p, err := fwbundle.CompressPartLevel(fwbundle.SlotPart, raw, &part, gzip.BestSpeed)
	if err != nil {
		return err
	}
	m, err := fwbundle.EncodeManifest(fwbundle.Manifest{Format: fwbundle.Format, Board: board, Version: version, Epoch: epoch, Parts: []fwbundle.Part{p}})
	if err != nil {
		return err
	}
	sig, err := fwbundle.SignManifest(k, m)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := fwbundle.Write(&b, m, sig, []io.Reader{&part}); err != nil {
		return err
	}
	return os.WriteFile(out, b.Bytes(), 0o644)
}

// resign returns the bundle with its manifest changed by edit and signed with k.
func resign(t *testing.T, bundle []byte, k minisign.SecretKey, edit func(*fwbundle.Manifest)) []byte {
	t.Helper()
	mb, _, err := fwbundle.ReadManifest(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	var m fwbundle.Manifest
	json.Unmarshal(mb, &m)
	if edit != nil {
		edit(&m)
	}
	mb, _ = fwbundle.EncodeManifest(m)
	sig, err := fwbundle.SignManifest(k, mb)
	if err != nil {
		t.Fatal(err)
	}
	return replaceEntries(t, bundle, mb, sig)
}

// replaceEntries rewrites a bundle with another manifest and signature, the parts as they are.
func replaceEntries(t *testing.T, bundle, manifest, sig []byte) []byte {
	t.Helper()
	var withSig bytes.Buffer
	if err := fwbundle.Resign(&withSig, bytes.NewReader(bundle), sig); err != nil {
		t.Fatal(err)
	}
	if manifest == nil {
		return withSig.Bytes()
	}
	// The manifest is the first entry: a tar header, the bytes, padding to 512.
	old, _, _ := fwbundle.ReadManifest(bytes.NewReader(bundle))
	if len(old) != len(manifest) {
		t.Fatalf("edited manifest is %d bytes, was %d: keep the length", len(manifest), len(old))
	}
	b := withSig.Bytes()
	i := bytes.Index(b, old)
	if i < 0 {
		t.Fatal("manifest not found in the bundle")
	}
	copy(b[i:], manifest)
	// The header checksum does not cover the body: the tar stays valid.
	return b
}

type fwStatus struct {
	Version    string `json:"version"`
	Slot       string `json:"slot"`
	Committed  bool   `json:"committed"`
	Updates    string `json:"updates"`
	LastUpdate *struct {
		Version, Outcome, Error string
	} `json:"last_update"`
}

func (v *vm) firmware(t *testing.T) (fwStatus, string) {
	t.Helper()
	code, b, err := v.get("/api/v1/status")
	if err != nil || code != http.StatusOK {
		return fwStatus{}, ""
	}
	var st struct {
		Firmware  fwStatus `json:"firmware"`
		Incidents []struct {
			Rule, Summary string
		} `json:"incidents"`
	}
	json.Unmarshal(b, &st)
	var rules []string
	for _, in := range st.Incidents {
		rules = append(rules, in.Rule)
	}
	return st.Firmware, strings.Join(rules, ",")
}

// waitFirmware waits until the firmware object satisfies ok.
func (v *vm) waitFirmware(t *testing.T, within time.Duration, what string, ok func(f fwStatus, incidents string) bool) fwStatus {
	t.Helper()
	var f fwStatus
	testpeer.Eventually(t, within, what, func() bool {
		var inc string
		f, inc = v.firmware(t)
		return ok(f, inc)
	})
	return f
}

// post sends a bundle to POST /api/v1/update and returns the status code and the answer
// (code 0 when the connection failed, as it may when the daemon refuses a bundle before
// reading all of it).
func (v *vm) post(t *testing.T, bundle []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/v1/update", v.webPort), bytes.NewReader(bundle))
	req.SetBasicAuth("admin", "pw")
	c := http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// updateVM boots img for the update tests and checks it runs version on slot.
func updateVM(t *testing.T, qemu, img, version, slot string) *vm {
	t.Helper()
	v := slotVM(t, qemu, img)
	v.waitConsole(t, 90*time.Second, "rackwatch: booting slot "+slot)
	v.waitFirmware(t, 120*time.Second, version+" in slot "+slot, func(f fwStatus, _ string) bool {
		return f.Version == version && f.Slot == slot
	})
	return v
}

// install posts a bundle that must be accepted.
func (v *vm) install(t *testing.T, bundle []byte, what string) {
	t.Helper()
	if code, body := v.post(t, bundle); code != http.StatusOK {
		t.Fatalf("update to %s: %d %s", what, code, body)
	}
}

// postAsync posts a bundle without waiting for the answer (QEMU is killed during the install).
func (v *vm) postAsync(t *testing.T, bundle []byte) {
	go v.post(t, bundle)
}

// TestUpdate: refused bundles leave slot B as it was; X updates to Y (slot B, committed after
// commit_after), then back to X in slot A with a bundle signed by the minisign tool. Then
// power cuts: during the slot write (X runs on), right after the switch (Y boots on trial),
// and on that trial before the commit (X again, reporting the rollback).
func TestUpdate(t *testing.T) {
	t.Parallel()
	qemu := requireQEMU(t)
	minisignBin := testpeer.Require(t, "minisign", "minisign")
	start := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(start).Round(time.Second), what) }
	defer phase("end")
	o := artifacts(t)
	root := moduleRoot(t)
	img := updateImage(t, o, "5s")
	v := slotVM(t, qemu, img)
	y := testBundle(t, "test-y")
	x := testBundle(t, "test-x")
	phase("bundles built")
	f := v.waitFirmware(t, 120*time.Second, "firmware of X", func(f fwStatus, _ string) bool { return f.Version == "test-x" })
	if f.Slot != "a" || !f.Committed || f.Updates != "ab" {
		t.Fatalf("firmware before the update: %+v", f)
	}
	phase("booted X")

	// The bundle's signature is minisign's format: the tool verifies it.
	dir := t.TempDir()
	mb, sig, err := fwbundle.ReadManifest(bytes.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "manifest.json"), mb, 0o644)
	os.WriteFile(filepath.Join(dir, "manifest.json.minisig"), sig, 0o644)
	if out, err := exec.Command(minisignBin, "-V", "-p", filepath.Join(root, "images/keys/dev.pub"), "-m", filepath.Join(dir, "manifest.json")).CombinedOutput(); err != nil {
		t.Fatalf("minisign -V refuses the bundle's signature: %v\n%s", err, out)
	}

	// Refused before a byte is written: slot B's bytes stay as they are.
	dev, err := devSecretKey(root)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := minisign.GenerateKey(rand.Reader)
	before := slotHash(t, img, 3)
	refused := []struct {
		name   string
		bundle []byte
	}{
		{"unsigned", replaceEntries(t, y, nil, []byte("untrusted comment: unsigned\n"))},
		{"wrongly signed", resign(t, y, other, nil)},
		{"truncated", y[:len(y)*2/3]},
		{"other board", resign(t, y, dev, func(m *fwbundle.Manifest) { m.Board = "rackwatch-armv7" })},
		{"older", resign(t, y, dev, func(m *fwbundle.Manifest) { m.Epoch-- })},
	}
	for _, c := range refused {
		if code, body := v.post(t, c.bundle); code != 0 && code != http.StatusUnprocessableEntity {
			t.Errorf("%s bundle: %d %s, want 422", c.name, code, body)
		}
	}
	code, b, _ := v.get("/api/v1/audit?limit=20")
	if n := strings.Count(string(b), `"detail":"refused`); code != 200 || n != len(refused) {
		t.Errorf("audit has %d refused updates, want %d: %s", n, len(refused), b)
	}
	if after := slotHash(t, img, 3); after != before {
		t.Fatal("a refused bundle changed slot B")
	}
	phase("refused bundles done")

	// X -> Y: reboot into B, commit after commit_after.
	v.install(t, y, "Y")
	v.waitExit(t, 120*time.Second, "the reboot into the new slot")
	v = updateVM(t, qemu, img, "test-y", "b")
	f = v.waitFirmware(t, 120*time.Second, "Y committed", func(f fwStatus, _ string) bool { return f.Committed })
	if f.LastUpdate == nil || f.LastUpdate.Outcome != "committed" || f.LastUpdate.Version != "test-y" {
		t.Fatalf("firmware after Y: %+v %+v", f, f.LastUpdate)
	}
	phase("Y committed")

	// Y -> X, back into slot A, with a bundle signed by the minisign tool.
	xm, _, _ := fwbundle.ReadManifest(bytes.NewReader(x))
	os.WriteFile(filepath.Join(dir, "x.json"), xm, 0o644)
	if out, err := exec.Command(minisignBin, "-S", "-s", filepath.Join(root, "images/keys/dev.key"), "-m", filepath.Join(dir, "x.json")).CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	v.install(t, replaceEntries(t, x, nil, readFile(t, filepath.Join(dir, "x.json.minisig"))), "X")
	v.waitExit(t, 120*time.Second, "the reboot into slot A")
	v = updateVM(t, qemu, img, "test-x", "a")
	v.waitFirmware(t, 120*time.Second, "X committed", func(f fwStatus, _ string) bool {
		return f.Committed && f.LastUpdate != nil && f.LastUpdate.Outcome == "committed"
	})
	phase("X committed")

	// Power cut during the slot write: X boots again.
	v.postAsync(t, y)
	v.waitConsole(t, 120*time.Second, "update: writing slot")
	v.powerCut()
	if v.consoleCount("update: boot state set") != 0 {
		t.Log("the slot write finished before the power cut: this boot tests a cut after the write")
	}
	v = updateVM(t, qemu, img, "test-x", "a")
	phase("power cut during the write: X runs")

	// Power cut right after the switch: Y boots on trial. A long commit_after, and a power
	// cut before the commit: X again, reporting the rollback.
	v.postAsync(t, y)
	v.waitConsole(t, 120*time.Second, "update: boot state set")
	v.powerCut()
	setDataFile(t, img, "rackwatch.yaml", updateConfig("1h"))
	v = updateVM(t, qemu, img, "test-y", "b")
	if f, _ := v.firmware(t); f.Committed {
		t.Fatalf("Y committed within an hour: %+v", f)
	}
	v.powerCut()
	v = updateVM(t, qemu, img, "test-x", "a")
	f = v.waitFirmware(t, 60*time.Second, "the rollback of Y reported", func(f fwStatus, inc string) bool {
		return f.LastUpdate != nil && f.LastUpdate.Version == "test-y" && f.LastUpdate.Outcome == "rolled-back" && strings.Contains(inc, "firmware-update")
	})
	if !f.Committed {
		t.Fatalf("firmware after the rollback: %+v", f)
	}
	phase("power cuts after the switch and before the commit: X runs, rollback reported")
}

// TestUpdateRollback: an update whose rackwatch exits at start, and one whose rackwatch
// hangs before READY, are each tried once; the board comes back to X by itself and reports
// the failed update.
func TestUpdateRollback(t *testing.T) {
	t.Parallel()
	qemu := requireQEMU(t)
	start := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(start).Round(time.Second), what) }
	defer phase("end")
	o := artifacts(t)
	img := updateImage(t, o, "5s")
	v := slotVM(t, qemu, img)
	exit1 := testBundle(t, "test-exit1")
	hang := testBundle(t, "test-hang")
	phase("bundles built")
	v.waitFirmware(t, 120*time.Second, "firmware of X", func(f fwStatus, _ string) bool { return f.Version == "test-x" && f.Slot == "a" })
	for _, bad := range []struct {
		name    string
		bundle  []byte
		console string
	}{
		{"test-exit1", exit1, "exit1: a rackwatch that fails at start"},
		{"test-hang", hang, "rackwatch did not say READY=1 in time"},
	} {
		v.install(t, bad.bundle, bad.name)
		v.waitExit(t, 120*time.Second, "the reboot into "+bad.name)
		v = slotVM(t, qemu, img)
		v.waitConsole(t, 90*time.Second, "rackwatch: booting slot b")
		v.waitConsole(t, 120*time.Second, bad.console)
		v.waitExit(t, 90*time.Second, bad.name+" failed on trial: /init reboots")
		v = updateVM(t, qemu, img, "test-x", "a")
		f := v.waitFirmware(t, 60*time.Second, "X again, reporting "+bad.name, func(f fwStatus, inc string) bool {
			return f.LastUpdate != nil && f.LastUpdate.Version == bad.name && strings.Contains(inc, "firmware-update")
		})
		if !f.Committed || f.LastUpdate.Outcome != "rolled-back" {
			t.Fatalf("after %s: %+v %+v", bad.name, f, f.LastUpdate)
		}
		phase(bad.name + " rolled back")
	}
}
