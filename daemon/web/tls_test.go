package web_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rackwatch/rackwatch/daemon/web"
	"github.com/rackwatch/rackwatch/internal/testpeer"
)

func selfSigned(t *testing.T) (string, string, *x509.CertPool) { return testpeer.SelfSigned(t) }

// TestBadCertificate: a certificate that cannot be read stops the start with the reason.
func TestBadCertificate(t *testing.T) {
	cert, _, _ := selfSigned(t)
	_, err := web.New(web.Options{TLSCert: cert, TLSKey: cert}, nil)
	if err == nil || !strings.Contains(err.Error(), "tls_cert") {
		t.Errorf("New with a certificate as its own key: %v", err)
	}
}

// TestTLS: with web.tls_cert and web.tls_key the page is served over HTTPS and the session
// cookie is Secure.
func TestTLS(t *testing.T) {
	cert, key, pool := selfSigned(t)
	s := runSite(t, siteOpts{tlsCert: cert, tlsKey: key})
	base := strings.Replace(s.URL, "http://", "https://", 1)
	c := newClient(t, base, true)
	c.c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	resp, body := c.get("/login")
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("GET /login over TLS: %d", resp.StatusCode)
	}
	if !strings.Contains(resp.Header.Get("Set-Cookie"), "Secure") {
		t.Errorf("login form cookie %q is not Secure", resp.Header.Get("Set-Cookie"))
	}
	resp, _ = c.postForm("/login", url.Values{"csrf": {csrfRE.FindStringSubmatch(body)[1]}, "user": {operator}, "password": {password}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login over TLS: %d", resp.StatusCode)
	}
	var sc string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "rw_session=") {
			sc = v
		}
	}
	for _, want := range []string{"Secure", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("session cookie %q lacks %s", sc, want)
		}
	}
	// Plain HTTP on the TLS port gets nothing useful.
	jar, _ := cookiejar.New(nil)
	plain := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	if r, err := plain.Get(s.URL + "/api/v1/status"); err == nil {
		r.Body.Close()
		if r.StatusCode == 200 {
			t.Error("plain HTTP answered on the TLS port")
		}
	}
}
