// Package objstore reads images from where they are kept: an S3-compatible
// bucket (minio-go) or a local folder, behind one small interface.
//
//	src, err := objstore.Open("s3://photos/2024/", objstore.S3Config{Endpoint: "minio:9000"}, objstore.Filter{})
//	err = src.List(ctx, "", func(o objstore.Object) error { ... })  // sorted by key
//	data, err := src.Get(ctx, key, maxBytes)
//
// Listing streams in lexicographic key order (S3's own order) and can start
// after a given key, which is what makes resuming and diffing against a
// previous listing cheap. Get retries transient failures (5xx, timeouts,
// dropped connections) with backoff and never retries permanent ones
// (ErrNotFound, access denied, ErrTooLarge).
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Errors Get returns (wrapped).
var (
	ErrNotFound = errors.New("object not found")
	ErrTooLarge = errors.New("object too large")
	// ErrAccessDenied: the credentials may not read the object or bucket.
	ErrAccessDenied = errors.New("access denied")
	// ErrTransient marks failures that may pass on a later attempt.
	ErrTransient = errors.New("transient storage error")
)

// Object is one listed object.
type Object struct {
	Key  string // full key (path relative to the folder for local sources)
	ETag string // S3 ETag, or size+mtime for local files
	Size int64
}

// Source lists and reads objects.
type Source interface {
	// List calls fn for every object under the source's prefix whose key
	// sorts after after ("" for all), in lexicographic key order, that
	// passes the filter. An error from fn stops the listing and is returned.
	List(ctx context.Context, after string, fn func(Object) error) error
	// Get reads the whole object, failing with ErrTooLarge past max bytes.
	Get(ctx context.Context, key string, max int64) ([]byte, error)
	// Stat reports whether key exists, whatever the filter says (ErrNotFound
	// is not an error here; other trouble is).
	Stat(ctx context.Context, key string) (exists bool, err error)
	// URI names the source (s3://bucket/prefix or an absolute folder).
	URI() string
	// ObjectURI names one object.
	ObjectURI(key string) string
	// KeyOf is the inverse of ObjectURI: the key of an object URI of this
	// source, ok false for a URI outside it.
	KeyOf(uri string) (key string, ok bool)
	// RowPrefix is what the URI of every object under the source starts
	// with, and the URI of no object outside it: the scope of the source's
	// rows in a collection.
	RowPrefix() string
}

// Filter selects objects by base name and size.
type Filter struct {
	// Include: shell patterns on the base name (path.Match); empty means
	// the usual image extensions (DefaultInclude).
	Include []string
	// Exclude: shell patterns on the base name; a match is skipped.
	Exclude []string
}

// DefaultInclude lists the extensions that imageprep decodes.
var DefaultInclude = []string{"*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp", "*.bmp", "*.tif", "*.tiff"}

// Match reports whether key passes the filter. Patterns compare case-insensitively.
func (f Filter) Match(key string) bool {
	base := strings.ToLower(path.Base(key))
	inc := f.Include
	if len(inc) == 0 {
		inc = DefaultInclude
	}
	ok := false
	for _, p := range inc {
		if m, _ := path.Match(strings.ToLower(p), base); m {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for _, p := range f.Exclude {
		if m, _ := path.Match(strings.ToLower(p), base); m {
			return false
		}
	}
	return true
}

// Validate checks the patterns.
func (f Filter) Validate() error {
	for _, p := range append(append([]string{}, f.Include...), f.Exclude...) {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("objstore: bad pattern %q: %w", p, err)
		}
	}
	return nil
}

// Open returns the source named by uri: s3://bucket/prefix, or a local
// folder (a path or file:///path).
func Open(uri string, s3 S3Config, f Filter) (Source, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if rest, ok := strings.CutPrefix(uri, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return nil, fmt.Errorf("objstore: %q names no bucket", uri)
		}
		return newS3(bucket, prefix, s3, f)
	}
	return newLocal(strings.TrimPrefix(uri, "file://"), f)
}

// readSized reads all of r, which says it holds size bytes (-1: unknown),
// and at most max: into one buffer of that size when it is known (a
// growing buffer would hold up to twice the object while it reads), and
// failing with ErrTooLarge past max.
func readSized(r io.Reader, size, max int64) ([]byte, error) {
	if size > max {
		return nil, ErrTooLarge
	}
	if size < 0 {
		b, err := io.ReadAll(io.LimitReader(r, max+1))
		if err == nil && int64(len(b)) > max {
			err = ErrTooLarge
		}
		return b, err
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	// Nothing more: an object that grew while it was read is too large
	// for what was admitted.
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return nil, ErrTooLarge
	}
	return b, nil
}
