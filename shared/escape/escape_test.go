package escape

import (
	"strings"
	"testing"
)

func TestTerminal(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"photos/2024/cat.jpg", "photos/2024/cat.jpg"},
		{"with space and ünïcode 猫.jpg", "with space and ünïcode 猫.jpg"},
		{"back\\slash.jpg", "back\\slash.jpg"},
		{"a\x1b[2K\x1b[1Aevil.jpg", `a\x1b[2K\x1b[1Aevil.jpg`},
		{"osc\x1b]0;title\x07.jpg", `osc\x1b]0;title\x07.jpg`},
		{"c1\u009b31m.jpg", `c1\x9b31m.jpg`},
		{"line\nbreak\r.jpg", `line\x0abreak\x0d.jpg`},
		{"bidi\u202egpj.exe", `bidi\u202egpj.exe`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"both\\ and \x1b", `both\\ and \x1b`},
	} {
		if got := Terminal(c.in); got != c.want {
			t.Errorf("Terminal(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.ContainsAny(Terminal(c.in), "\x1b\x07\r\n\u009b\u202e") {
			t.Errorf("Terminal(%q) still holds a control character", c.in)
		}
	}
}

func TestText(t *testing.T) {
	in := "line one\n\tkey a\x1b]8;;http://x\x07b\rdone"
	if got, want := Text(in), "line one\n\tkey a\\x1b]8;;http://x\\x07b\\x0ddone"; got != want {
		t.Fatalf("Text(%q) = %q, want %q", in, got, want)
	}
}

func TestClipAndValue(t *testing.T) {
	long := strings.Repeat("猫", 10000)
	got := Value(long)
	if len(got) > MaxValue+32 || !strings.HasSuffix(got, "... (30000 bytes)") {
		t.Fatalf("Value of 30,000 bytes: %d bytes, %q", len(got), got[len(got)-30:])
	}
	if Clip("short", 10) != "short" {
		t.Fatal("a short value must be kept whole")
	}
	if q := Quoted("a\x1bb"); q != `"a\x1bb"` {
		t.Fatalf("Quoted: %s", q)
	}
}

func FuzzTerminal(f *testing.F) {
	f.Add("a\x1b[31mb")
	f.Add("\u202e\xff\\")
	f.Fuzz(func(t *testing.T, s string) {
		out := Terminal(s)
		for _, r := range out {
			if unsafe(r) {
				t.Fatalf("Terminal(%q) = %q keeps %U", s, out, r)
			}
		}
	})
}
