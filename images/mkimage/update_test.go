package main

import (
	"bytes"
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
	setBootFile(t, img, "cmdline.txt", cmdlineFile(defaultCmdline+" rackwatch.start_timeout=45"))
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

// bundles are built once per test binary.
var (
	bundleOnce sync.Once
	bundleErr  error
	bundleSet  map[string]string // name -> file
)

// testBundles builds the bundles the tests install: versions y and z of the test image, one
// whose rackwatch exits at start, one whose rackwatch hangs; each slot image is built by
// mkimage as `make update` does, and signed with the development key.
func testBundles(t *testing.T) map[string]string {
	t.Helper()
	o := artifacts(t)
	bundleOnce.Do(func() {
		dir := filepath.Join(buildDir, "bundles")
		if bundleErr = os.MkdirAll(dir, 0o755); bundleErr != nil {
			return
		}
		root := moduleRoot(t)
		exit1, hang := filepath.Join(dir, "exit1"), filepath.Join(dir, "hang")
		if bundleErr = crossBuild(root, "./images/mkimage/testdata/exit1", exit1); bundleErr != nil {
			return
		}
		if bundleErr = crossBuild(root, "./images/mkimage/testdata/hang", hang); bundleErr != nil {
			return
		}
		set := map[string]string{}
		for _, b := range []struct{ name, rackwatch string }{{"test-y", ""}, {"test-z", ""}, {"test-exit1", exit1}, {"test-hang", hang}} {
			so := o
			so.Version = b.name
			if b.rackwatch != "" {
				so.Rackwatch = b.rackwatch
			}
			so.RackwatchB = ""
			so.SlotOut = filepath.Join(dir, b.name+".slot")
			if _, bundleErr = build(so); bundleErr != nil {
				return
			}
			out := filepath.Join(dir, b.name+".update")
			if bundleErr = makeBundle(root, so.SlotOut, b.name, "rackwatch-arm64", o.Epoch, out); bundleErr != nil {
				return
			}
			os.Remove(so.SlotOut)
			set[b.name] = out
		}
		bundleSet = set
	})
	if bundleErr != nil {
		t.Fatalf("build the bundles: %v", bundleErr)
	}
	return bundleSet
}

func devSecretKey(root string) (minisign.SecretKey, error) {
	b, err := os.ReadFile(filepath.Join(root, "images/keys/dev.key"))
	if err != nil {
		return minisign.SecretKey{}, err
	}
	return minisign.ParseSecretKey(b)
}

// makeBundle is images/mkupdate's build, for a slot image file.
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
	p, err := fwbundle.CompressPart(fwbundle.SlotPart, raw, &part)
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

// TestUpdate is one board's life: refused bundles leave slot B as it was; X updates to Y
// (slot B, committed after commit_after), then to Z back in slot A (a bundle signed by the
// minisign tool); a Z-to-exit1 update whose rackwatch exits at start, and one whose
// rackwatch hangs, are tried once each and the board comes back to Z by itself, reporting
// the failed update.
func TestUpdate(t *testing.T) {
	qemu := requireQEMU(t)
	minisignBin := testpeer.Require(t, "minisign", "minisign")
	start := time.Now()
	phase := func(what string) { t.Logf("%v: %s", time.Since(start).Round(time.Second), what) }
	defer phase("end")
	o := artifacts(t)
	img := updateImage(t, o, "5s")
	v := slotVM(t, qemu, img)
	bundles := testBundles(t)
	phase("bundles built")
	root := moduleRoot(t)
	v.waitHTTP(t, "/api/v1/status", 120*time.Second)
	f := v.waitFirmware(t, 30*time.Second, "firmware of X", func(f fwStatus, _ string) bool { return f.Version == "test-x" })
	if f.Slot != "a" || !f.Committed || f.Updates != "ab" {
		t.Fatalf("firmware before the update: %+v", f)
	}

	y := readFile(t, bundles["test-y"])
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

	phase("booted X")
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
		code, body := v.post(t, c.bundle)
		if code != 0 && code != http.StatusUnprocessableEntity {
			t.Errorf("%s bundle: %d %s, want 422", c.name, code, body)
		}
		t.Logf("%s bundle: %d %s", c.name, code, body)
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
	if code, body := v.post(t, y); code != http.StatusOK {
		t.Fatalf("update to Y: %d %s", code, body)
	}
	v.waitExit(t, 60*time.Second, "the reboot into the new slot")
	v = slotVM(t, qemu, img)
	v.waitConsole(t, 60*time.Second, "rackwatch: booting slot b")
	f = v.waitFirmware(t, 120*time.Second, "Y committed in slot B", func(f fwStatus, _ string) bool { return f.Committed && f.Version == "test-y" })
	if f.Slot != "b" || f.LastUpdate == nil || f.LastUpdate.Outcome != "committed" || f.LastUpdate.Version != "test-y" {
		t.Fatalf("firmware after Y: %+v %+v", f, f.LastUpdate)
	}

	phase("Y committed")
	// Y -> Z into slot A, with a bundle signed by the minisign tool.
	z := readFile(t, bundles["test-z"])
	zm, _, _ := fwbundle.ReadManifest(bytes.NewReader(z))
	os.WriteFile(filepath.Join(dir, "z.json"), zm, 0o644)
	if out, err := exec.Command(minisignBin, "-S", "-s", filepath.Join(root, "images/keys/dev.key"), "-m", filepath.Join(dir, "z.json")).CombinedOutput(); err != nil {
		t.Fatalf("minisign -S: %v\n%s", err, out)
	}
	z = replaceEntries(t, z, nil, readFile(t, filepath.Join(dir, "z.json.minisig")))
	if code, body := v.post(t, z); code != http.StatusOK {
		t.Fatalf("update to Z: %d %s", code, body)
	}
	v.waitExit(t, 60*time.Second, "the reboot into slot A")
	v = slotVM(t, qemu, img)
	f = v.waitFirmware(t, 120*time.Second, "Z committed in slot A", func(f fwStatus, _ string) bool { return f.Committed && f.Version == "test-z" })
	if f.Slot != "a" {
		t.Fatalf("firmware after Z: %+v", f)
	}

	phase("Z committed")
	// Z -> a rackwatch that exits at start, then one that hangs: each is tried once, and the
	// board comes back to Z by itself and reports it.
	for _, bad := range []struct{ name, console string }{
		{"test-exit1", "exit1: a rackwatch that fails at start"},
		{"test-hang", "rackwatch did not say READY=1 in time"},
	} {
		if code, body := v.post(t, readFile(t, bundles[bad.name])); code != http.StatusOK {
			t.Fatalf("update to %s: %d %s", bad.name, code, body)
		}
		v.waitExit(t, 60*time.Second, "the reboot into "+bad.name)
		v = slotVM(t, qemu, img)
		v.waitConsole(t, 60*time.Second, "rackwatch: booting slot b")
		v.waitConsole(t, 120*time.Second, bad.console)
		v.waitExit(t, 60*time.Second, bad.name+" failed on trial: /init reboots")
		v = slotVM(t, qemu, img)
		v.waitConsole(t, 60*time.Second, "rackwatch: booting slot a")
		f = v.waitFirmware(t, 120*time.Second, "Z again, reporting "+bad.name, func(f fwStatus, inc string) bool {
			return f.LastUpdate != nil && f.LastUpdate.Version == bad.name && strings.Contains(inc, "firmware-update")
		})
		phase(bad.name + " rolled back")
		if f.Version != "test-z" || f.Slot != "a" || !f.Committed || f.LastUpdate.Outcome != "rolled-back" {
			t.Fatalf("after %s: %+v %+v", bad.name, f, f.LastUpdate)
		}
	}
	st, err := bootState(t, img, 0)
	st1, err1 := bootState(t, img, 1)
	t.Logf("boot state at the end: %+v (%v) %+v (%v)", st, err, st1, err1)
}
