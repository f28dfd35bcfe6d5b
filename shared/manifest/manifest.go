// Package manifest records what a completed run stored: the sorted list of
// object keys with their ETag and size, per source and model, compressed and
// streamed so that memory stays flat however large the source is.
//
// The next run diffs its fresh listing against the last manifest with a
// streaming merge (both are sorted by key): new and changed objects are
// embedded, deleted ones are removed, unchanged ones are skipped.
//
//	w := manifest.NewWriter(f, manifest.Header{Model: "clip-vit-b32", Version: v})
//	w.Write(manifest.Entry{Key: "a.jpg", ETag: "e1", Size: 10}) // keys strictly increasing
//	w.Close()
//	r, err := manifest.NewReader(f)
//	c := manifest.NewCursor(r)
//	old, found, err := c.Seek("b.jpg", func(gone manifest.Entry) error { ... }) // keys before b.jpg are gone
package manifest

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

const magic = "EFMANIFEST1\n"

// Entry is one stored object.
type Entry struct {
	Key  string
	ETag string
	Size int64
}

// Same reports whether e and o describe the same content.
func (e Entry) Same(o Entry) bool { return e.Key == o.Key && e.ETag == o.ETag && e.Size == o.Size }

// Header describes a manifest.
type Header struct {
	Source  string `json:"source"`
	Model   string `json:"model"`
	Version string `json:"version"` // the model's version when the run stored these
	Run     string `json:"run"`
}

// ErrUnsorted is returned by Write for a key not after the previous one.
var ErrUnsorted = errors.New("manifest keys must be strictly increasing")

// Writer writes a manifest. Not safe for concurrent use.
type Writer struct {
	gz    *gzip.Writer
	bw    *bufio.Writer
	last  string
	n     int64
	first bool
	buf   []byte
}

// NewWriter starts a manifest on w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	bw := bufio.NewWriterSize(gz, 64<<10)
	hb, _ := json.Marshal(h)
	if _, err := bw.WriteString(magic); err != nil {
		return nil, err
	}
	mw := &Writer{gz: gz, bw: bw, first: true}
	mw.putBytes(hb)
	return mw, nil
}

func (w *Writer) putBytes(b []byte) {
	w.buf = binary.AppendUvarint(w.buf[:0], uint64(len(b)))
	w.bw.Write(w.buf)
	w.bw.Write(b)
}

// Write appends e; keys must be strictly increasing.
func (w *Writer) Write(e Entry) error {
	if !w.first && e.Key <= w.last {
		return fmt.Errorf("%w: %q after %q", ErrUnsorted, e.Key, w.last)
	}
	w.first, w.last = false, e.Key
	w.putBytes([]byte(e.Key))
	w.putBytes([]byte(e.ETag))
	w.buf = binary.AppendVarint(w.buf[:0], e.Size)
	_, err := w.bw.Write(w.buf)
	w.n++
	return err
}

// Count is the number of entries written.
func (w *Writer) Count() int64 { return w.n }

// Close flushes the manifest (it does not close the underlying writer).
func (w *Writer) Close() error {
	if err := w.bw.Flush(); err != nil {
		return err
	}
	return w.gz.Close()
}

// Reader reads a manifest.
type Reader struct {
	br     *bufio.Reader
	Header Header
	last   string
}

// NewReader opens a manifest and reads its header.
func NewReader(r io.Reader) (*Reader, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	br := bufio.NewReaderSize(gz, 64<<10)
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(br, m); err != nil || string(m) != magic {
		return nil, errors.New("manifest: not an embedfleet manifest")
	}
	mr := &Reader{br: br}
	hb, err := mr.bytes()
	if err != nil {
		return nil, fmt.Errorf("manifest: header: %w", err)
	}
	if err := json.Unmarshal(hb, &mr.Header); err != nil {
		return nil, fmt.Errorf("manifest: header: %w", err)
	}
	return mr, nil
}

func (r *Reader) bytes() ([]byte, error) {
	n, err := binary.ReadUvarint(r.br)
	if err != nil {
		return nil, err
	}
	if n > 1<<20 {
		return nil, errors.New("manifest: record too long")
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r.br, b)
	return b, err
}

// Next returns the next entry, or io.EOF after the last.
func (r *Reader) Next() (Entry, error) {
	k, err := r.bytes()
	if err == io.EOF {
		return Entry{}, io.EOF
	}
	if err != nil {
		return Entry{}, fmt.Errorf("manifest: %w", err)
	}
	et, err := r.bytes()
	if err != nil {
		return Entry{}, fmt.Errorf("manifest: truncated: %w", err)
	}
	size, err := binary.ReadVarint(r.br)
	if err != nil {
		return Entry{}, fmt.Errorf("manifest: truncated: %w", err)
	}
	e := Entry{Key: string(k), ETag: string(et), Size: size}
	if r.last != "" && e.Key <= r.last {
		return Entry{}, fmt.Errorf("manifest: %w: %q after %q", ErrUnsorted, e.Key, r.last)
	}
	r.last = e.Key
	return e, nil
}

// Cursor walks a manifest alongside a sorted listing. A nil reader is an
// empty manifest.
type Cursor struct {
	r   *Reader
	cur Entry
	ok  bool
	err error
}

// NewCursor positions a cursor on r's first entry.
func NewCursor(r *Reader) *Cursor {
	c := &Cursor{r: r}
	c.advance()
	return c
}

func (c *Cursor) advance() {
	if c.r == nil {
		c.ok = false
		return
	}
	e, err := c.r.Next()
	if err == io.EOF {
		c.ok = false
		return
	}
	if err != nil {
		c.ok, c.err = false, err
		return
	}
	c.cur, c.ok = e, true
}

// Seek moves past every entry before key, handing each to gone (objects no
// longer listed), and returns the entry for key if the manifest has it.
func (c *Cursor) Seek(key string, gone func(Entry) error) (Entry, bool, error) {
	for c.ok && c.cur.Key < key {
		if err := gone(c.cur); err != nil {
			return Entry{}, false, err
		}
		c.advance()
	}
	if c.err != nil {
		return Entry{}, false, c.err
	}
	if c.ok && c.cur.Key == key {
		e := c.cur
		c.advance()
		return e, true, c.err
	}
	return Entry{}, false, nil
}

// Rest hands every remaining entry to gone.
func (c *Cursor) Rest(gone func(Entry) error) error {
	for c.ok {
		if err := gone(c.cur); err != nil {
			return err
		}
		c.advance()
	}
	return c.err
}

// Counts tallies a diff.
type Counts struct {
	New       int64 `json:"new"`
	Changed   int64 `json:"changed"`
	Unchanged int64 `json:"unchanged"`
	Deleted   int64 `json:"deleted"`
}
