package nut

import (
	"errors"
	"strings"
)

// errParse is a line that upsd's parser would reject: '#' inside quotes, an unterminated
// quote, or a backslash at the end of the line.
var errParse = errors.New("unbalanced quotes or escape")

// parseLine splits one request line (without its newline) into words the way upsd's
// parseconf does: white space separates words; "double quotes" group one word; a backslash
// takes the next character literally, inside quotes or not; '#' outside quotes starts a
// comment. Like parseconf it drops control and non-ASCII bytes, keeps at most 32 words of
// at most 512 bytes. Unlike parseconf it does not make '=' a word of its own: that rule is
// for config files, and splitting a password like "a=b" in three would only hurt.
// upsd carries an open quote or a trailing backslash over to the next line; a network
// request never needs that, so it is an error here.
func parseLine(line []byte) ([]string, error) {
	const (
		findStart = iota
		collect
		collectLit
		quote
		quoteLit
	)
	var (
		words []string
		word  strings.Builder
		state = findStart
	)
	add := func(c byte) {
		// CVE-2012-2944: parseconf keeps only space to DEL.
		if c < 0x20 || c > 0x7f || word.Len() >= pconfWordLenLimit {
			return
		}
		word.WriteByte(c)
	}
	end := func() {
		if len(words) < pconfArgLimit {
			words = append(words, word.String())
		}
		word.Reset()
	}
	for _, c := range line {
		switch state {
		case findStart:
			switch {
			case c == '#':
				return words, nil
			case isSpace(c):
			case c == '\\':
				state = collectLit
			case c == '"':
				state = quote
			default:
				add(c)
				state = collect
			}
		case collect:
			switch {
			case c == '#':
				end()
				return words, nil
			case isSpace(c):
				end()
				state = findStart
			case c == '\\':
				state = collectLit
			default:
				add(c)
			}
		case collectLit:
			add(c)
			state = collect
		case quote:
			switch c {
			case '#':
				return nil, errParse
			case '"':
				end()
				state = findStart
			case '\\':
				state = quoteLit
			default:
				add(c)
			}
		case quoteLit:
			add(c)
			state = quote
		}
	}
	switch state {
	case collect:
		end()
	case collectLit, quote, quoteLit:
		return nil, errParse
	}
	return words, nil
}

// isSpace is C's isspace in the C locale, which parseconf uses.
func isSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

// encode escapes a value for a double-quoted word, as pconf_encode does ('#', '\\' and '"'
// get a backslash). It also turns control characters into spaces: a value must never be able
// to end the line it is sent on.
func encode(s string) string {
	if !strings.ContainsAny(s, "#\\\"") && !hasControl(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '#' || c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
