package vecstore

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidID is a value given as a row id that is not one (ids are 32 lowercase
// hex digits, see ID). Nothing was sent to Milvus.
var ErrInvalidID = errors.New("invalid id")

// Every value that reaches a Milvus filter expression goes through this file:
// ids are validated (ValidateID) and every string is written as a literal by
// quote, LIKE patterns by prefixPattern. No other code in the project builds
// an expression from a value, and the client's WithIDs and WithStringIDs,
// which paste strings between quotes as they are, are not used.

// ValidateID checks that id is a row id as ID makes them.
func ValidateID(id string) error {
	if len(id) != idLen {
		return fmt.Errorf("%w %q: want %d hex digits", ErrInvalidID, clip(id), idLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w %q: want %d lowercase hex digits", ErrInvalidID, clip(id), idLen)
		}
	}
	return nil
}

// clip shortens a hostile value before it goes into an error message.
func clip(s string) string {
	if len(s) > 48 {
		return s[:48] + "..."
	}
	return s
}

// quote writes s as a Milvus string literal: in double quotes, with
// backslash, double quote and control characters escaped, as Milvus's
// expression grammar reads them. Any UTF-8 text survives the round trip; a
// test reads back rows whose URIs hold quotes, brackets, backslashes and
// operators through every filter built here.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// prefixPattern is a LIKE literal that matches every string starting with
// prefix, and maybe more: the literal part stops before the first character
// that LIKE treats specially or that milvus-lite 2.5 does not match after an
// escape (%, _, backslash, control characters; a test shows which), and
// callers check each row's value with strings.HasPrefix. So the server
// narrows the scan and the exact match is made here, whatever the server's
// escaping rules.
func prefixPattern(prefix string) string {
	cut := strings.IndexFunc(prefix, func(r rune) bool {
		return r == '%' || r == '_' || r == '\\' || r < 0x20 || r == 0x7f
	})
	if cut >= 0 {
		prefix = prefix[:cut]
	}
	return quote(prefix + "%")
}

// validIDs is ids less the strings that are not ids (see ValidateID): those
// have no row and are never sent.
func validIDs(ids []string) []string {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if ValidateID(id) == nil {
			valid = append(valid, id)
		}
	}
	return valid
}

// idsFilter is `id in [...]` for ids that are all valid.
func idsFilter(ids []string) (string, error) {
	var b strings.Builder
	b.WriteString(FieldID + " in [")
	for i, id := range ids {
		if err := ValidateID(id); err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quote(id))
	}
	b.WriteByte(']')
	return b.String(), nil
}

// uriPrefixFilter is a filter of the rows whose URI starts with prefix, and
// maybe a few more (see prefixPattern).
func uriPrefixFilter(prefix string) string {
	return FieldURI + " like " + prefixPattern(prefix)
}
