package web

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever next is, the redirect stays on the site as a browser reads a
// Location (tabs and newlines dropped, backslashes as slashes), also once percent-decoded.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/?range=24h", "//evil", "/\t/evil", "/%09/evil", "/%5Cevil", "%2F%2Fevil", "https://evil", "/%252F%252Fevil"} {
		f.Add(s)
	}
	base, _ := url.Parse("http://rack.example/login")
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		if got != "/" && got != next {
			t.Fatalf("safeNext(%q) = %q: neither next nor /", next, got)
		}
		d, err := url.PathUnescape(got)
		if err != nil {
			t.Fatalf("safeNext(%q) = %q, which does not decode: %v", next, got, err)
		}
		for _, loc := range []string{got, d} {
			loc = strings.TrimFunc(loc, func(r rune) bool { return r <= ' ' })
			loc = strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(loc)
			u, err := url.Parse(loc)
			if err != nil {
				continue
			}
			if r := base.ResolveReference(u); r.Host != base.Host || r.Scheme != base.Scheme {
				t.Fatalf("safeNext(%q) = %q leaves the site, to %s", next, got, r)
			}
		}
	})
}
