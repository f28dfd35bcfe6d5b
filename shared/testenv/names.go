package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
)

// Name returns a name unique to this test and call, made of lowercase
// letters, digits and underscores and starting with prefix, short enough for
// a Milvus collection, a JetStream stream or (through [BucketName]) an S3
// bucket.
func Name(t testing.TB, prefix string) string {
	t.Helper()
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := strings.Trim(b.String(), "_")
	if len(base) > 32 {
		base = base[len(base)-32:]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return prefix + "_" + base + "_" + hex.EncodeToString(rnd[:])
}

// BucketName is [Name] spelled as a valid S3 bucket name (hyphens, at most
// 63 characters).
func BucketName(t testing.TB, prefix string) string {
	t.Helper()
	n := strings.ReplaceAll(Name(t, prefix), "_", "-")
	if len(n) > 63 {
		n = n[len(n)-63:]
	}
	return strings.Trim(n, "-")
}
