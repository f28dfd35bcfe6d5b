// Package escape makes strings that came from outside (object keys, URIs,
// request parameters, file contents) safe for the place they are shown: a
// terminal, a log line, an error message. HTML goes through the page's
// textContent and html/template, CSV through encoding/csv; this package is
// for plain text.
//
//	fmt.Fprintf(out, "  failed %s: %s\n", escape.Terminal(key), reason)
//	return fmt.Errorf("no row %s", escape.Value(id))
package escape

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxValue is the longest part of an outside value that Value keeps.
const MaxValue = 120

// Terminal returns s with everything a terminal would act on written as a
// Go escape instead: C0 and C1 control characters (ESC, which starts CSI and
// OSC sequences, BEL, backspace, carriage return, line feeds too: one value
// stays on one line), DEL, the Unicode bidirectional overrides and
// isolates (they reorder what is shown), and invalid UTF-8. Printable text,
// spaces included, is left as it is, so an ordinary key prints unchanged.
func Terminal(s string) string {
	if !needs(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafe(r):
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		case r == '\\': // doubled, so that the output reads back one way
			b.WriteString(`\\`)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needs(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size <= 1) || unsafe(r) {
			return true
		}
		i += size
	}
	return false
}

// unsafe reports whether a terminal would act on r rather than show it.
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true // bidi embeddings, overrides, isolates and marks
	case r == 0xfeff || r == 0x2028 || r == 0x2029:
		return true
	}
	return !unicode.IsPrint(r) && !unicode.IsSpace(r) && unicode.Is(unicode.Cc, r)
}

// Text is Terminal for a message of several lines (an error that says
// what to do next, say): line feeds and tabs stay, everything else a
// terminal would act on is escaped.
func Text(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		parts := strings.Split(l, "\t")
		for j, p := range parts {
			parts[j] = Terminal(p)
		}
		lines[i] = strings.Join(parts, "\t")
	}
	return strings.Join(lines, "\n")
}

// Clip shortens s to at most max bytes, cut on a character boundary, and
// says how long it was: "abc... (10000 bytes)".
func Clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}

// Value is an outside value as it goes into an error message or a log
// line: clipped to MaxValue bytes, then made safe for a terminal.
func Value(s string) string { return Terminal(Clip(s, MaxValue)) }

// Quoted is Value in double quotes, for messages that quote what they
// were given.
func Quoted(s string) string { return `"` + Value(s) + `"` }
