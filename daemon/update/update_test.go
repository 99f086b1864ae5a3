package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rackwatch/rackwatch/internal/bootstate"
	"github.com/rackwatch/rackwatch/internal/fwbundle"
	"github.com/rackwatch/rackwatch/internal/minisign"
)

const slotSize = 1 << 20

// board is a fake board: a boot dir, two plain files as the slot devices, the image's
// firmware.json and keys, and the daemon's database, all in a temp dir.
type board struct {
	t       *testing.T
	dir     string
	db      *bolt.DB
	reboots chan struct{}
	mu      sync.Mutex
	reports []Report
}

func newBoard(t *testing.T) *board {
	b := &board{t: t, dir: t.TempDir(), reboots: make(chan struct{}, 4)}
	for _, d := range []string{"boot", "keys", "spool", "etc"} {
		os.MkdirAll(filepath.Join(b.dir, d), 0o755)
	}
	for _, s := range []string{"a", "b"} {
		os.WriteFile(b.slot(s), bytes.Repeat([]byte{byte(s[0])}, slotSize), 0o644)
	}
	pub, _ := os.ReadFile("../../images/keys/dev.pub")
	os.WriteFile(filepath.Join(b.dir, "keys", "dev.pub"), pub, 0o644)
	if err := bootstate.Default().Save(b.boot()); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(b.dir, "rackwatch.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b.db = db
	return b
}

func (b *board) slot(s string) string { return filepath.Join(b.dir, "slot-"+s+".img") }
func (b *board) boot() string         { return filepath.Join(b.dir, "boot") }

func (b *board) state() bootstate.State {
	st, err := bootstate.Load(b.boot())
	if err != nil {
		b.t.Fatal(err)
	}
	return st
}

func (b *board) setState(f func(*bootstate.State)) {
	st := b.state()
	f(&st)
	if err := st.Save(b.boot()); err != nil {
		b.t.Fatal(err)
	}
}

// updater starts "the daemon" on slot running version at epoch, in boot bootID.
func (b *board) updater(slot, version string, epoch int64, bootID string) *Updater {
	b.t.Helper()
	fw := filepath.Join(b.dir, "etc", "firmware-"+version+".json")
	os.WriteFile(fw, []byte(`{"version":"`+version+`","board":"rackwatch-arm64","epoch":`+itoa(epoch)+`}`), 0o644)
	u, err := New(Options{DB: b.db, Slot: slot, BootDir: b.boot(), FirmwareFile: fw, KeysDir: filepath.Join(b.dir, "keys"),
		SpoolDir: filepath.Join(b.dir, "spool"), DpkgList: filepath.Join(b.dir, "nope"), BootID: bootID,
		Device:      func(s string) (string, error) { return b.slot(s), nil },
		Reboot:      func() error { b.reboots <- struct{}{}; return nil },
		RebootDelay: time.Millisecond,
		Report: func(r Report) {
			b.mu.Lock()
			b.reports = append(b.reports, r)
			b.mu.Unlock()
		}})
	if err != nil {
		b.t.Fatal(err)
	}
	u.Configure(Settings{CommitAfter: 300 * time.Millisecond, MaxBytes: 4 << 20})
	if err := u.Boot(); err != nil {
		b.t.Fatal(err)
	}
	return u
}

func (b *board) lastReport() Report {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reports) == 0 {
		b.t.Fatal("nothing reported")
	}
	return b.reports[len(b.reports)-1]
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func devKey(t testing.TB) minisign.SecretKey {
	b, err := os.ReadFile("../../images/keys/dev.key")
	if err != nil {
		t.Fatal(err)
	}
	k, err := minisign.ParseSecretKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func slotImage(version string) []byte {
	img := make([]byte, slotSize-4096)
	copy(img, "FAT32 slot holding "+version)
	return img
}

func bundle(t *testing.T, k minisign.SecretKey, boardName, version string, epoch int64, img []byte) []byte {
	var part bytes.Buffer
	p, err := fwbundle.CompressPart(fwbundle.SlotPart, bytes.NewReader(img), &part)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := fwbundle.EncodeManifest(fwbundle.Manifest{Format: 1, Board: boardName, Version: version, Epoch: epoch, Parts: []fwbundle.Part{p}})
	sig, err := fwbundle.SignManifest(k, m)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := fwbundle.Write(&out, m, sig, []io.Reader{&part}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func fileHash(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// v1 on slot a installs v2 into b, reboots; v2 boots on trial and commits after a healthy
// commit_after; then v3 goes back into a.
func TestInstallTrialCommit(t *testing.T) {
	b := newBoard(t)
	u := b.updater("a", "v1", 1000, "boot1")
	if f := u.Status(); f.Version != "v1" || f.Slot != "a" || !f.Committed || f.Updates != UpdatesAB {
		t.Fatalf("status %+v", f)
	}
	img := slotImage("v2")
	res, err := u.Install(context.Background(), bytes.NewReader(bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, img)), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.Slot != "b" || res.Version != "v2" || res.KeyID != devKey(t).ID.String() {
		t.Fatalf("result %+v", res)
	}
	<-b.reboots
	got, _ := os.ReadFile(b.slot("b"))
	if !bytes.Equal(got[:len(img)], img) {
		t.Fatal("slot b does not hold the image")
	}
	if st := b.state(); st.Trial != "B" || st.Order[0] != "B" || st.Left["B"] != 1 || st.Left["A"] != bootstate.MaxTries {
		t.Fatalf("boot state after install %+v", st)
	}
	if r := b.lastReport(); r.By != "alice" || r.Update.Outcome != OutcomeInstalled {
		t.Fatalf("report %+v", r)
	}
	// The daemon restarts within the same boot: nothing is judged, nothing written.
	gen := b.state().Gen
	b.updater("a", "v1", 1000, "boot1")
	if b.state().Gen != gen {
		t.Fatal("a restart in the same boot wrote the boot state")
	}

	// The boot script takes the trial: B's try is used up.
	b.setState(func(s *bootstate.State) { s.Left["B"] = 0 })
	u2 := b.updater("b", "v2", 2000, "boot2")
	if f := u2.Status(); f.Committed || f.LastUpdate == nil || f.LastUpdate.Outcome != OutcomeTrial {
		t.Fatalf("status on trial %+v", f)
	}
	if _, err := u2.Install(context.Background(), bytes.NewReader(nil), "bob"); !errors.Is(err, ErrBusy) {
		t.Fatalf("install on trial: %v", err)
	}
	healthy := errors.New("poller stuck")
	var hmu sync.Mutex
	checks := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		u2.Run(context.Background(), func() error { hmu.Lock(); defer hmu.Unlock(); checks++; return healthy })
	}()
	// Unhealthy for longer than commit_after: no commit.
	waitFor(t, "unhealthy checks", func() bool { hmu.Lock(); defer hmu.Unlock(); return checks >= 8 })
	if st := b.state(); st.Trial != "B" {
		t.Fatalf("committed while unhealthy: %+v", st)
	}
	hmu.Lock()
	healthy = nil
	hmu.Unlock()
	<-done
	if st := b.state(); st.Trial != "" || st.Order[0] != "B" || st.Left["B"] != bootstate.MaxTries {
		t.Fatalf("boot state after commit %+v", st)
	}
	if f := u2.Status(); !f.Committed || f.LastUpdate.Outcome != OutcomeCommitted || f.LastUpdate.From != "v1" || f.LastUpdate.Version != "v2" {
		t.Fatalf("status after commit %+v %+v", f, f.LastUpdate)
	}
	if r := b.lastReport(); r.Update.Outcome != OutcomeCommitted {
		t.Fatalf("report %+v", r)
	}
	// The next boot of v2: tries back to full, one write; a restart in it, none.
	b.setState(func(s *bootstate.State) { s.Left["B"]-- })
	b.updater("b", "v2", 2000, "boot3")
	gen = b.state().Gen
	if st := b.state(); st.Left["B"] != bootstate.MaxTries {
		t.Fatalf("normal boot did not reset the tries: %+v", st)
	}
	u3 := b.updater("b", "v2", 2000, "boot3")
	if b.state().Gen != gen {
		t.Fatal("a daemon restart wrote the boot state again")
	}
	// Back to a.
	if _, err := u3.Install(context.Background(), bytes.NewReader(bundle(t, devKey(t), "rackwatch-arm64", "v3", 3000, slotImage("v3"))), "alice"); err != nil {
		t.Fatal(err)
	}
	<-b.reboots
	if st := b.state(); st.Trial != "A" || st.Order[0] != "A" {
		t.Fatalf("boot state %+v", st)
	}
}

// The new slot never came up: the boot script went back to a; v1 reports the rollback.
func TestRollback(t *testing.T) {
	b := newBoard(t)
	u := b.updater("a", "v1", 1000, "boot1")
	if _, err := u.Install(context.Background(), bytes.NewReader(bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, slotImage("v2"))), "mqtt:42"); err != nil {
		t.Fatal(err)
	}
	<-b.reboots
	b.setState(func(s *bootstate.State) { s.Left["B"] = 0; s.Left["A"]-- })
	u2 := b.updater("a", "v1", 1000, "boot3")
	f := u2.Status()
	if !f.Committed || f.LastUpdate == nil || f.LastUpdate.Outcome != OutcomeRolledBack || f.LastUpdate.Version != "v2" {
		t.Fatalf("status %+v %+v", f, f.LastUpdate)
	}
	if r := b.lastReport(); r.Update.Outcome != OutcomeRolledBack {
		t.Fatalf("report %+v", r)
	}
	if st := b.state(); st.Trial != "" || st.Order[0] != "A" || st.Left["A"] != bootstate.MaxTries {
		t.Fatalf("boot state %+v", st)
	}
	// Reported once: the next boot has nothing pending.
	n := len(b.reports)
	b.updater("a", "v1", 1000, "boot4")
	if len(b.reports) != n {
		t.Fatal("the rollback was reported twice")
	}
}

// Bad bundles are refused with the inactive slot and the boot state untouched.
func TestRefusedLeavesSlot(t *testing.T) {
	b := newBoard(t)
	u := b.updater("a", "v1", 2000, "boot1")
	other, _ := minisign.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 128)))
	good := bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, slotImage("v2"))
	cases := map[string][]byte{
		"wrong key":   bundle(t, other, "rackwatch-arm64", "v2", 2000, slotImage("v2")),
		"other board": bundle(t, devKey(t), "rackwatch-armv7", "v2", 2000, slotImage("v2")),
		"older":       bundle(t, devKey(t), "rackwatch-arm64", "v0", 1999, slotImage("v0")),
		"truncated":   good[:len(good)-3000],
		// larger than the slot device
		"too big": bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, make([]byte, slotSize+512)),
	}
	slotHash := fileHash(t, b.slot("b"))
	gen := b.state().Gen
	for name, bb := range cases {
		_, err := u.Install(context.Background(), bytes.NewReader(bb), "alice")
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%s: err = %v, want refused", name, err)
		}
		if fileHash(t, b.slot("b")) != slotHash {
			t.Fatalf("%s: slot b was written", name)
		}
		if b.state().Gen != gen {
			t.Fatalf("%s: boot state written", name)
		}
	}
	if st := b.state(); st.Trial != "" || st.Order[0] != "A" {
		t.Fatalf("boot state %+v", st)
	}
	select {
	case <-b.reboots:
		t.Fatal("rebooted")
	default:
	}
}

// blockingReader gives a bundle's first bytes, then waits.
type blockingReader struct {
	r       io.Reader
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (br *blockingReader) Read(p []byte) (int, error) {
	br.once.Do(func() { close(br.started); <-br.release })
	return br.r.Read(p)
}

func TestOneAtATime(t *testing.T) {
	b := newBoard(t)
	u := b.updater("a", "v1", 1000, "boot1")
	br := &blockingReader{r: bytes.NewReader(bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, slotImage("v2"))),
		started: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { _, err := u.Install(context.Background(), br, "alice"); errc <- err }()
	<-br.started
	if !u.Status().Busy {
		t.Error("status does not say busy")
	}
	if _, err := u.Install(context.Background(), bytes.NewReader(nil), "bob"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second install: %v", err)
	}
	close(br.release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestNotTheImage(t *testing.T) {
	dir := t.TempDir()
	dpkg := filepath.Join(dir, "rackwatch.list")
	for _, c := range []struct {
		list, want string
	}{{dpkg, UpdatesApt}, {filepath.Join(dir, "none"), UpdatesNone}} {
		os.WriteFile(dpkg, nil, 0o644)
		u, err := New(Options{Version: "v1", DpkgList: c.list})
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Boot(); err != nil {
			t.Fatal(err)
		}
		if f := u.Status(); f.Updates != c.want || f.Version != "v1" || !f.Committed {
			t.Fatalf("status %+v", f)
		}
		if _, err := u.Install(context.Background(), bytes.NewReader(nil), "alice"); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("install: %v", err)
		}
	}
}

func TestInstallURL(t *testing.T) {
	b := newBoard(t)
	u := b.updater("a", "v1", 1000, "boot1")
	bb := bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, slotImage("v2"))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(bb) }))
	defer srv.Close()
	ca := filepath.Join(b.dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	sum := sha256.Sum256(bb)
	good := hex.EncodeToString(sum[:])
	slotHash := fileHash(t, b.slot("b"))

	// Without the CA the server is not trusted.
	if _, err := u.InstallURL(context.Background(), srv.URL, good, "mqtt:1"); err == nil {
		t.Fatal("an untrusted server was used")
	}
	u.Configure(Settings{CommitAfter: time.Second, MaxBytes: 4 << 20, CAFile: ca})
	for _, c := range []struct{ url, sha string }{
		{srv.URL, hex.EncodeToString(make([]byte, 32))},
		{"http://" + srv.Listener.Addr().String(), good},
		{srv.URL, "abc"},
	} {
		if _, err := u.InstallURL(context.Background(), c.url, c.sha, "mqtt:1"); !errors.Is(err, ErrRefused) {
			t.Fatalf("%s %s: err = %v", c.url, c.sha, err)
		}
		if fileHash(t, b.slot("b")) != slotHash {
			t.Fatal("slot written")
		}
	}
	if _, err := u.InstallURL(context.Background(), srv.URL, good, "mqtt:1"); err != nil {
		t.Fatal(err)
	}
	<-b.reboots
}

// The commit waits for commit_after of a healthy site without a break, on the updater's
// clock: an unhealthy check starts the wait again.
func TestCommitWindow(t *testing.T) {
	b := newBoard(t)
	u := b.updater("a", "v1", 1000, "boot1")
	if _, err := u.Install(context.Background(), bytes.NewReader(bundle(t, devKey(t), "rackwatch-arm64", "v2", 2000, slotImage("v2"))), "alice"); err != nil {
		t.Fatal(err)
	}
	<-b.reboots
	b.setState(func(s *bootstate.State) { s.Left["B"] = 0 })
	var mu sync.Mutex
	now := time.Unix(5000, 0)
	var healthy error
	checks := 0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration, h error) int {
		mu.Lock()
		defer mu.Unlock()
		now, healthy = now.Add(d), h
		return checks
	}
	u2 := b.updater("b", "v2", 2000, "boot2")
	u2.now = clock
	u2.Configure(Settings{CommitAfter: 400 * time.Millisecond, MaxBytes: 4 << 20})
	done := make(chan struct{})
	go func() {
		defer close(done)
		u2.Run(context.Background(), func() error { mu.Lock(); defer mu.Unlock(); checks++; return healthy })
	}()
	waitChecks := func(after int) {
		waitFor(t, "more health checks", func() bool { mu.Lock(); defer mu.Unlock(); return checks >= after+3 })
	}
	waitChecks(0)
	// Healthy, but the clock has not moved on: no commit.
	n := advance(300*time.Millisecond, errors.New("poller stuck"))
	waitChecks(n)
	// Unhealthy at 300 ms: the wait starts again; healthy from here, 300 ms more is not enough.
	n = advance(300*time.Millisecond, nil)
	waitChecks(n)
	if st := b.state(); st.Trial != "B" {
		t.Fatalf("committed before a healthy commit_after: %+v", st)
	}
	advance(200*time.Millisecond, nil)
	<-done
	if st := b.state(); st.Trial != "" || st.Left["B"] != bootstate.MaxTries {
		t.Fatalf("not committed: %+v", st)
	}
}
