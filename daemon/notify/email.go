package notify

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"

	mail "github.com/wneessen/go-mail"
)

// emailSender sends one plain-text message per event over SMTP, with STARTTLS when the
// server offers it (or always, or never: starttls), and authentication when a username is
// set.
type emailSender struct {
	cfg  Target
	opts []mail.Option
	host string
}

func newEmail(t Target) (*emailSender, error) {
	host, port, err := net.SplitHostPort(t.SMTP)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("smtp port %q", port)
	}
	policy := mail.TLSOpportunistic
	switch t.StartTLS {
	case "mandatory":
		policy = mail.TLSMandatory
	case "off":
		policy = mail.NoTLS
	}
	tc, err := tlsConfig(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tc.ServerName = host
	opts := []mail.Option{mail.WithPort(p), mail.WithTLSPolicy(policy), mail.WithTLSConfig(tc), mail.WithTimeout(t.Timeout),
		mail.WithHELO(hostname())}
	if t.Username != "" {
		pw := ""
		if t.PasswordFile != "" {
			if pw, err = readSecret(t.PasswordFile); err != nil {
				return nil, fmt.Errorf("password_file: %w", err)
			}
		}
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(t.Username), mail.WithPassword(pw))
	}
	return &emailSender{cfg: t, opts: opts, host: host}, nil
}

// EmailSubject is the subject line of m.
func EmailSubject(m Message) string {
	s := fmt.Sprintf("[rackwatch %s/%s] %s %s: %s", m.Site, m.Node, strings.ToUpper(m.Severity), m.Event.Event, m.Rule)
	if m.Device != "" {
		s += " on " + m.Device
	}
	if m.Repeat > 0 {
		s += fmt.Sprintf(" (reminder %d)", m.Repeat)
	}
	return s
}

// EmailBody is the plain-text body of m.
func EmailBody(m Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", summary(m))
	for _, f := range [][2]string{{"Incident", m.ID}, {"Event", m.Event.Event}, {"Severity", m.Severity}, {"Rule", m.Rule},
		{"Device", m.Device}, {"Metric", m.Metric}, {"Value", sdValue(m.Value)}, {"Threshold", sdValue(m.Threshold)},
		{"Opened", m.OpenedAt}, {"At", m.TS}, {"By", m.By}, {"Site", m.Site}, {"Node", m.Node}, {"Key", m.Key()}, {"Note", m.Note}} {
		if f[1] != "" {
			fmt.Fprintf(&b, "%-10s %s\n", f[0]+":", f[1])
		}
	}
	if m.PageURL != "" {
		fmt.Fprintf(&b, "\nPage: %s\n", m.PageURL)
	}
	return b.String()
}

func (e *emailSender) Send(ctx context.Context, m Message) error {
	// The same event resent (at least once) keeps its Message-ID, so mail clients can fold it.
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '.'
	}, fmt.Sprintf("%s.%s.%s.%s.%d", m.Site, m.ID, m.Event.Event, m.TS, m.Repeat))
	return e.send(ctx, EmailSubject(m), id+"@"+m.Node+".rackwatch", EmailBody(m))
}

// send sends one plain-text message.
func (e *emailSender) send(ctx context.Context, subject, messageID, body string) error {
	msg := mail.NewMsg()
	if err := msg.From(e.cfg.From); err != nil {
		return fmt.Errorf("from: %w", err)
	}
	if err := msg.To(e.cfg.To...); err != nil {
		return fmt.Errorf("to: %w", err)
	}
	msg.Subject(subject)
	msg.SetMessageIDWithValue(messageID)
	msg.SetBodyString(mail.TypeTextPlain, body)
	c, err := mail.NewClient(e.host, e.opts...)
	if err != nil {
		return err
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("smtp %s: %w", e.cfg.SMTP, err)
	}
	return nil
}

func (e *emailSender) Close() error { return nil }
