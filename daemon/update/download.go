package update

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// downloadTimeout bounds one download: a bundle is tens of MB, and the command goroutine
// waits for it.
const downloadTimeout = 10 * time.Minute

// maxTrailer is what may follow the bundle's tar end in a download (padding to a record).
const maxTrailer = 64 << 10

// InstallURL downloads a bundle over HTTPS and installs it as Install does, once the whole
// download has the sha256 given (hex) as well as a good signature.
func (u *Updater) InstallURL(ctx context.Context, rawURL, sha string, by string) (Result, error) {
	want, err := hex.DecodeString(strings.ToLower(sha))
	if err != nil || len(want) != sha256.Size {
		return Result{}, fmt.Errorf("%w: sha256 %q is not 64 hex digits", ErrRefused, sha)
	}
	pu, err := url.Parse(rawURL)
	if err != nil || pu.Scheme != "https" || pu.Host == "" {
		return Result{}, fmt.Errorf("%w: url %q: only https:// URLs are fetched", ErrRefused, rawURL)
	}
	if u.updates != UpdatesAB {
		return u.Install(ctx, nil, by)
	}
	client, err := u.httpClient()
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pu.String(), nil)
	if err != nil {
		return Result{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("update: download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("update: download: %s", resp.Status)
	}
	max := u.settings().MaxBytes
	if resp.ContentLength > max+maxTrailer+maxHeaderBytes {
		return Result{}, fmt.Errorf("%w: the download is %d bytes, more than update.max_bytes", ErrRefused, resp.ContentLength)
	}
	h := sha256.New()
	body := io.TeeReader(io.LimitReader(resp.Body, max+maxTrailer+maxHeaderBytes), h)
	check := func() error {
		n, err := io.Copy(io.Discard, io.LimitReader(body, maxTrailer+1))
		if err != nil {
			return fmt.Errorf("download: %w", err)
		}
		if n > maxTrailer {
			return errors.New("data after the bundle")
		}
		if got := h.Sum(nil); !equalBytes(got, want) {
			return fmt.Errorf("the download's sha256 is %x, the command says %s", got, sha)
		}
		return nil
	}
	return u.installChecked(ctx, body, by, check)
}

// maxHeaderBytes is room for the tar headers, the manifest and the signature.
const maxHeaderBytes = 1 << 20

func equalBytes(a, b []byte) bool { return string(a) == string(b) }

func (u *Updater) httpClient() (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if f := u.settings().CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("update: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("update: ca_file %s: no certificate", f)
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: t, Timeout: downloadTimeout}, nil
}
