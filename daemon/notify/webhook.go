package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// SignatureHeader carries the HMAC-SHA256 of the body when the target has a secret_file.
const SignatureHeader = "X-Rackwatch-Signature"

// MaxRequest bounds a webhook's body: an event whose fields would make it larger is cut
// (its note first), so a receiver that limits bodies still takes it.
const MaxRequest = 64 << 10

type webhook struct {
	cfg        Target
	client     *http.Client
	secret     []byte
	routingKey string
}

func readSecret(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func tlsConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func newWebhook(t Target) (*webhook, error) {
	w := &webhook{cfg: t, routingKey: t.RoutingKey}
	tc, err := tlsConfig(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil
	w.client = &http.Client{Transport: tr, Timeout: t.Timeout,
		// A redirect could carry the signed body somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if t.SecretFile != "" {
		s, err := readSecret(t.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("secret_file: %w", err)
		}
		w.secret = []byte(s)
	}
	if t.RoutingKeyFile != "" {
		s, err := readSecret(t.RoutingKeyFile)
		if err != nil {
			return nil, fmt.Errorf("routing_key_file: %w", err)
		}
		w.routingKey = s
	}
	return w, nil
}

// Sign is the X-Rackwatch-Signature value of body.
func Sign(secret, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write(body)
	return "sha256=" + hex.EncodeToString(h.Sum(nil))
}

func (w *webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

func (w *webhook) Send(ctx context.Context, m Message) error {
	body, err := w.body(m)
	if err != nil {
		return err
	}
	if len(body) > MaxRequest {
		// Only free text can make an event this large: the note goes, long values are cut.
		m.Note = ""
		m.Value, m.Threshold = cutText(fmt.Sprint(m.Value), 1024), cutText(fmt.Sprint(m.Threshold), 1024)
		if body, err = w.body(m); err != nil {
			return err
		}
	}
	return w.post(ctx, body)
}

// post sends body and reads (a bounded part of) the answer.
func (w *webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rackwatch")
	if w.secret != nil {
		req.Header.Set(SignatureHeader, Sign(w.secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, MaxBody))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

func (w *webhook) body(m Message) ([]byte, error) {
	switch w.cfg.Format {
	case "alertmanager":
		return json.Marshal(alertmanagerBody(m))
	case "pagerduty":
		return json.Marshal(pagerdutyBody(m, w.routingKey))
	}
	return json.Marshal(genericBody(m))
}

// Generic is the generic webhook's body: the R/incidents payload plus where it came from.
type Generic struct {
	Event
	Site   string `json:"site"`
	Node   string `json:"node"`
	Key    string `json:"key"`
	State  string `json:"state"` // firing, resolved
	URL    string `json:"url,omitempty"`
	Repeat int    `json:"repeat,omitempty"`
}

func genericBody(m Message) Generic {
	return Generic{Event: m.Event, Site: m.Site, Node: m.Node, Key: m.Key(), State: m.Firing(), URL: m.PageURL, Repeat: m.Repeat}
}

func summary(m Message) string {
	s := fmt.Sprintf("[%s] %s %s", m.Severity, m.Rule, m.Event.Event)
	if m.Device != "" {
		s += fmt.Sprintf(": %s %s = %v", m.Device, m.Metric, m.Value)
	}
	if m.Threshold != nil {
		s += fmt.Sprintf(" (threshold %v)", m.Threshold)
	}
	return s + fmt.Sprintf(" at %s/%s", m.Site, m.Node)
}

// alertmanagerBody is Alertmanager's webhook payload (version 4), one alert per event.
func alertmanagerBody(m Message) map[string]any {
	labels := map[string]string{"alertname": m.Rule, "severity": m.Severity, "site": m.Site, "node": m.Node,
		"device": m.Device, "metric": m.Metric, "incident": m.ID}
	ann := map[string]string{"summary": summary(m), "description": m.Note, "event": m.Event.Event}
	if m.By != "" {
		ann["acknowledged_by"] = m.By
	}
	if m.PageURL != "" {
		ann["url"] = m.PageURL
	}
	endsAt := "0001-01-01T00:00:00Z"
	if m.Event.Event == Resolved {
		endsAt = m.TS
	}
	alert := map[string]any{"status": m.Firing(), "labels": labels, "annotations": ann, "startsAt": m.OpenedAt,
		"endsAt": endsAt, "generatorURL": m.PageURL, "fingerprint": fingerprint(m.Key())}
	return map[string]any{"version": "4", "groupKey": m.Key(), "truncatedAlerts": 0, "status": m.Firing(),
		"receiver": "rackwatch", "groupLabels": map[string]string{"incident": m.ID},
		"commonLabels": labels, "commonAnnotations": ann, "externalURL": m.PageURL, "alerts": []any{alert}}
}

func fingerprint(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:8])
}

// pagerdutyBody is a PagerDuty Events API v2 event.
func pagerdutyBody(m Message, routingKey string) map[string]any {
	action := "trigger"
	switch m.Event.Event {
	case Acknowledged:
		action = "acknowledge"
	case Resolved:
		action = "resolve"
	}
	sev := "warning" // PagerDuty's severities: critical, error, warning, info
	if m.critical() {
		sev = "critical"
	}
	ts := m.TS
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		ts = ""
	}
	details := map[string]any{"incident": m.ID, "event": m.Event.Event, "value": m.Value, "threshold": m.Threshold,
		"metric": m.Metric, "opened_at": m.OpenedAt, "note": m.Note}
	if m.By != "" {
		details["acknowledged_by"] = m.By
	}
	body := map[string]any{"routing_key": routingKey, "event_action": action, "dedup_key": m.Key(),
		"payload": map[string]any{"summary": summary(m), "source": m.Site + "/" + m.Node, "severity": sev,
			"timestamp": ts, "component": m.Device, "group": m.Site, "class": m.Rule, "custom_details": details}}
	if m.PageURL != "" {
		body["links"] = []map[string]string{{"href": m.PageURL, "text": "rackwatch"}}
	}
	return body
}

// cutText cuts s to at most n bytes, on a UTF-8 boundary.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
