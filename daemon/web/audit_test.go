package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAuditLogins: a login by the form and failed logins are in /api/v1/audit with the
// client's address; a flood of failures from one address is counted, not recorded one by
// one; the backup needs a login.
func TestAuditLogins(t *testing.T) {
	s := runSite(t, siteOpts{})
	c := newClient(t, s.URL, true)
	c.login(operator, password)
	for i := range 12 {
		_, body := c.get("/login")
		c.postForm("/login", url.Values{"csrf": {csrfRE.FindStringSubmatch(body)[1]}, "user": {fmt.Sprintf("guess%d", i)}, "password": {"x"}}, nil)
	}
	api := newClient(t, s.URL, false)
	resp, body := api.get("/api/v1/audit?limit=100")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/audit: %d %s", resp.StatusCode, body)
	}
	var recs []struct {
		Seq                                 uint64
		Actor, Source, Action, Target, Hash string
	}
	if err := json.Unmarshal([]byte(body), &recs); err != nil {
		t.Fatal(err)
	}
	failed, login := 0, 0
	for _, r := range recs {
		switch {
		case r.Action == "login" && r.Actor == operator && r.Source == "web" && r.Target == "127.0.0.1":
			login++
		case r.Action == "login.failed" && r.Source == "web" && r.Target == "127.0.0.1" && strings.HasPrefix(r.Actor, "guess"):
			failed++
		}
	}
	if login != 1 || failed != 5 {
		t.Errorf("%d login and %d login.failed records, want 1 and 5 (the rest counted): %+v", login, failed, recs)
	}
	_, metrics := api.get("/metrics")
	if !strings.Contains(metrics, "rackwatch_audit_suppressed_total 7\n") {
		t.Errorf("/metrics: no rackwatch_audit_suppressed_total 7")
	}
	if resp, _ := api.get("/api/v1/audit?limit=2"); resp.StatusCode != 200 {
		t.Errorf("limit=2: %d", resp.StatusCode)
	}
	for _, bad := range []string{"0", "-1", "many"} {
		if resp, _ := api.get("/api/v1/audit?limit=" + bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("limit=%s: %d, want 400", bad, resp.StatusCode)
		}
	}
	if resp, _ := api.get("/api/v1/backup"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("backup without a login: %d, want 401", resp.StatusCode)
	}
}
