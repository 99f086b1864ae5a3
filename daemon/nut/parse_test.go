package nut

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "", want: nil},
		{in: "   \t ", want: nil},
		{in: "VER", want: []string{"VER"}},
		{in: "GET VAR ups1 ups.status\r", want: []string{"GET", "VAR", "ups1", "ups.status"}},
		{in: "  GET\tVAR  ups1 ", want: []string{"GET", "VAR", "ups1"}},
		{in: `PASSWORD "two words"`, want: []string{"PASSWORD", "two words"}},
		{in: `PASSWORD ""`, want: []string{"PASSWORD", ""}},
		{in: `SET VAR u x "a \"quoted\" \\ value"`, want: []string{"SET", "VAR", "u", "x", `a "quoted" \ value`}},
		{in: `a\ b c`, want: []string{"a b", "c"}},
		{in: `\#x`, want: []string{"#x"}},
		{in: `"x\#y"`, want: []string{"x#y"}},
		{in: `abc"def"`, want: []string{`abc"def"`}}, // a quote inside a word is just a character
		{in: `"ab"cd`, want: []string{"ab", "cd"}},
		{in: "GET VAR # a comment", want: []string{"GET", "VAR"}},
		{in: "GET VAR#comment", want: []string{"GET", "VAR"}},
		{in: "# only a comment", want: nil},
		{in: "a=b", want: []string{"a=b"}},
		{in: "a\x01b\xffc\x7f", want: []string{"abc\x7f"}},
		{in: `"unterminated`, err: true},
		{in: `"x#y"`, err: true},
		{in: `trailing\`, err: true},
		{in: `"trailing\`, err: true},
	} {
		got, err := parseLine([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("parseLine(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("parseLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseLineLimits(t *testing.T) {
	got, err := parseLine([]byte(strings.Repeat("w ", 40)))
	if err != nil || len(got) != pconfArgLimit {
		t.Errorf("40 words: got %d words, %v; want %d", len(got), err, pconfArgLimit)
	}
	got, err = parseLine([]byte(strings.Repeat("x", 2000)))
	if err != nil || len(got) != 1 || len(got[0]) != pconfWordLenLimit {
		t.Errorf("2000-byte word: got %d words, %v", len(got), err)
	}
}

func TestEncode(t *testing.T) {
	for in, want := range map[string]string{
		"OL":           "OL",
		`a"b`:          `a\"b`,
		`a\b`:          `a\\b`,
		"#1":           `\#1`,
		"line\nbreak":  "line break",
		"tab\there\r":  "tab here ",
		"":             "",
		`"\#` + "\x00": `\"\\\# `,
	} {
		if got := encode(in); got != want {
			t.Errorf("encode(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseLine: any bytes from the network parse without a panic into printable words,
// and an encoded word parses back to itself.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"VER", `GET VAR ups1 ups.status`, `PASSWORD "a \"b\" \\c"`, `"x#`, `a\`,
		"#c", "\x00\xff", `SET VAR u v "1 2" # c`, strings.Repeat(`"\`, 20)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		words, err := parseLine(line)
		if err != nil {
			return
		}
		if len(words) > pconfArgLimit {
			t.Fatalf("%d words", len(words))
		}
		for _, w := range words {
			if len(w) > pconfWordLenLimit || !utf8.ValidString(w) {
				t.Fatalf("bad word %q", w)
			}
			for i := 0; i < len(w); i++ {
				if w[i] < 0x20 || w[i] > 0x7f {
					t.Fatalf("control byte in word %q", w)
				}
			}
			if w == "" || strings.ContainsRune(w, 0x7f) {
				continue
			}
			back, err := parseLine([]byte(`"` + encode(w) + `"`))
			if err != nil || len(back) != 1 || back[0] != w {
				t.Fatalf("round trip of %q: %q, %v", w, back, err)
			}
		}
	})
}
