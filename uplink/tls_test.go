package uplink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

// pki is a test CA with a server and a client certificate, written as PEM files.
type pki struct{ dir, ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T, name string, serverHosts ...string) pki {
	t.Helper()
	// mosquitto may run as another user: the folder and files must be readable by it.
	dir, err := os.MkdirTemp("", "uplink-pki-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := pki{dir: dir}
	write := func(file, typ string, der []byte) string {
		path := filepath.Join(dir, name+"-"+file)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, hosts []string) (string, string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(cn+".pem", "CERTIFICATE", der), write(cn+".key", "PRIVATE KEY", kder)
	}
	p.serverCert, p.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth, serverHosts)
	p.clientCert, p.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth, nil)
	return p
}

// TestTLS: mosquitto with require_certificate true. The right CA and a client certificate
// connect and deliver; a wrong CA, a certificate for another host name and a missing client
// certificate are refused with a log line that says which, and the queue keeps everything.
func TestTLS(t *testing.T) {
	good := newPKI(t, "good", "127.0.0.1")
	other := newPKI(t, "other", "127.0.0.1")
	m := startMosquitto(t, "cafile "+good.ca, "certfile "+good.serverCert, "keyfile "+good.serverKey,
		"require_certificate true")
	url := "ssl://" + m.Addr

	t.Run("refused", func(t *testing.T) {
		for _, c := range []struct {
			name, ca, cert, key, want string
		}{
			{"wrong CA", other.ca, good.clientCert, good.clientKey, "broker certificate not signed by the CA in " + other.ca},
			{"client cert from another CA", good.ca, other.clientCert, other.clientKey, "broker refused our client certificate"},
			{"no client cert", good.ca, "", "", "broker refused our client certificate"},
		} {
			t.Run(c.name, func(t *testing.T) {
				db := openDB(t, filepath.Join(t.TempDir(), "rw.db"))
				defer db.Close()
				logs := &testpeer.Buffer{}
				o := testOptions(url)
				o.CAFile, o.CertFile, o.KeyFile = c.ca, c.cert, c.key
				o.Logger = slog.New(slog.NewTextHandler(logs, nil))
				u := start(t, db, o)
				for i := 0; i < 5; i++ {
					if err := u.Telemetry(reading(i)); err != nil {
						t.Fatal(err)
					}
				}
				testpeer.Eventually(t, 20*time.Second, "a refused connection logged", func() bool {
					return strings.Count(logs.String(), "connect failed") >= 2
				})
				if !strings.Contains(logs.String(), c.want) {
					t.Errorf("log does not say %q:\n%s", c.want, logs.String())
				}
				if st := u.Status(); st.Connected || st.Queued != 5 || st.Published != 0 || !strings.Contains(st.LastError, "TLS") {
					t.Errorf("status %+v, want 5 queued, not connected, a TLS error", st)
				}
			})
		}
	})

	t.Run("host name", func(t *testing.T) {
		// The broker's certificate names 127.0.0.1; dialling it as localhost must fail
		// verification even though the CA is right.
		db := openDB(t, filepath.Join(t.TempDir(), "rw.db"))
		defer db.Close()
		logs := &testpeer.Buffer{}
		o := testOptions("ssl://localhost:" + strings.Split(m.Addr, ":")[1])
		o.CAFile, o.CertFile, o.KeyFile = good.ca, good.clientCert, good.clientKey
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		u := start(t, db, o)
		testpeer.Eventually(t, 20*time.Second, "a refused connection logged", func() bool {
			return strings.Contains(logs.String(), "connect failed")
		})
		if !strings.Contains(logs.String(), "does not match its host name") || u.Status().Connected {
			t.Errorf("no host name error:\n%s", logs.String())
		}
	})

	t.Run("mTLS connects", func(t *testing.T) {
		sub := subscribeTLS(t, m, good)
		db := openDB(t, filepath.Join(t.TempDir(), "rw.db"))
		defer db.Close()
		o := testOptions(url)
		o.CAFile, o.CertFile, o.KeyFile = good.ca, good.clientCert, good.clientKey
		u := start(t, db, o)
		for i := 0; i < 5; i++ {
			if err := u.Telemetry(reading(i)); err != nil {
				t.Fatal(err)
			}
		}
		testpeer.Eventually(t, 20*time.Second, "5 telemetry over TLS", func() bool {
			return len(missing(seqs(t, sub, "telemetry"), 5)) == 0 && u.Status().Queued == 0
		})
		if !u.Status().Connected {
			t.Errorf("status %+v", u.Status())
		}
	})
}

// tlsSub is a paho subscriber over mTLS collecting "topic payload" lines (testpeer's
// mosquitto_sub wrapper takes no TLS arguments).
type tlsSub struct {
	mu    sync.Mutex
	lines []string
}

func (s *tlsSub) Matching(suffix string, has ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
next:
	for _, l := range s.lines {
		topic, payload, _ := strings.Cut(l, " ")
		if !strings.HasSuffix(topic, suffix) {
			continue
		}
		for _, h := range has {
			if !strings.Contains(payload, h) {
				continue next
			}
		}
		out = append(out, payload)
	}
	return out
}

func subscribeTLS(t *testing.T, m *testpeer.Mosquitto, p pki) *tlsSub {
	t.Helper()
	o := Options{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}
	cfg, err := tlsConfig(o, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsSub{}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + m.Addr).SetClientID("tls-sub").
		SetTLSConfig(cfg).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(root+"/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.lines = append(s.lines, m.Topic()+" "+string(m.Payload()))
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return s
}
