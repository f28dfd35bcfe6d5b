package manifest_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/embedfleet/embedfleet/shared/manifest"
)

func write(t *testing.T, entries []manifest.Entry) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	w, err := manifest.NewWriter(&b, manifest.Header{Model: "m", Version: "sha256:v", Source: "s3://b/p", Run: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return &b
}

func TestRoundTripAndDiff(t *testing.T) {
	old := []manifest.Entry{{"a", "1", 10}, {"b", "1", 10}, {"c\tweird\nkey", "1", 10}, {"d", "1", 10}, {"f", "1", 10}}
	r, err := manifest.NewReader(write(t, old))
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Version != "sha256:v" || r.Header.Run != "r1" {
		t.Fatalf("header %+v", r.Header)
	}
	// New listing: a same, b changed, c gone, d same, e new, f gone, g new.
	listing := []manifest.Entry{{"a", "1", 10}, {"b", "2", 10}, {"d", "1", 10}, {"e", "1", 5}, {"g", "1", 5}}
	c := manifest.NewCursor(r)
	var got manifest.Counts
	var gone []string
	onGone := func(e manifest.Entry) error { gone = append(gone, e.Key); got.Deleted++; return nil }
	for _, e := range listing {
		prev, found, err := c.Seek(e.Key, onGone)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !found:
			got.New++
		case prev.Same(e):
			got.Unchanged++
		default:
			got.Changed++
		}
	}
	if err := c.Rest(onGone); err != nil {
		t.Fatal(err)
	}
	want := manifest.Counts{New: 2, Changed: 1, Unchanged: 2, Deleted: 2}
	if got != want || fmt.Sprint(gone) != fmt.Sprint([]string{"c\tweird\nkey", "f"}) {
		t.Fatalf("diff %+v gone %q, want %+v [c.. f]", got, gone, want)
	}
}

func TestEmptyManifestCursor(t *testing.T) {
	c := manifest.NewCursor(nil)
	if _, found, err := c.Seek("x", func(manifest.Entry) error { t.Fatal("nothing is gone"); return nil }); found || err != nil {
		t.Fatalf("seek in nothing: %v %v", found, err)
	}
}

func TestWriterRefusesUnsorted(t *testing.T) {
	w, _ := manifest.NewWriter(io.Discard, manifest.Header{})
	w.Write(manifest.Entry{Key: "b"})
	if err := w.Write(manifest.Entry{Key: "a"}); !errors.Is(err, manifest.ErrUnsorted) {
		t.Fatalf("unsorted write: %v", err)
	}
	if err := w.Write(manifest.Entry{Key: "b"}); !errors.Is(err, manifest.ErrUnsorted) {
		t.Fatalf("duplicate write: %v", err)
	}
}

func TestReaderRejectsDamage(t *testing.T) {
	if _, err := manifest.NewReader(bytes.NewReader([]byte("not gzip"))); err == nil {
		t.Fatal("read garbage")
	}
	b := write(t, []manifest.Entry{{"a", "1", 1}, {"b", "1", 1}}).Bytes()
	r, err := manifest.NewReader(bytes.NewReader(b[:len(b)-12]))
	if err != nil {
		return // the damage hit the header or the gzip stream: refused, fine
	}
	for {
		if _, err := r.Next(); err != nil {
			if err == io.EOF {
				t.Fatal("a truncated manifest read to a clean end")
			}
			return
		}
	}
}
