package objstore

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// Objects reads single objects by their URI (s3://bucket/key, or a file's
// path as a local source names it), opening one Source per bucket or folder
// and keeping it. Safe for concurrent use.
type Objects struct {
	s3   S3Config
	mu   sync.Mutex
	srcs map[string]Source
}

// NewObjects returns an Objects that reads S3 with s3.
func NewObjects(s3 S3Config) *Objects { return &Objects{s3: s3, srcs: map[string]Source{}} }

// everything lets a source read any key it is asked for by name.
var everything = Filter{Include: []string{"*"}}

// Get reads the object uri names, at most max bytes (ErrTooLarge past it).
func (o *Objects) Get(ctx context.Context, uri string, max int64) ([]byte, error) {
	root, key, err := splitURI(uri)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	src, ok := o.srcs[root]
	if !ok {
		src, err = Open(root, o.s3, everything)
		if err == nil {
			o.srcs[root] = src
		}
	}
	o.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return src.Get(ctx, key, max)
}

// splitURI cuts an object URI into its source (a bucket, or the folder of
// a local file) and its key.
func splitURI(uri string) (root, key string, err error) {
	if rest, ok := strings.CutPrefix(uri, "s3://"); ok {
		bucket, k, _ := strings.Cut(rest, "/")
		if bucket == "" || k == "" || strings.HasSuffix(k, "/") {
			return "", "", fmt.Errorf("objstore: %q names no object", uri)
		}
		return "s3://" + bucket + "/", k, nil
	}
	p := strings.TrimPrefix(uri, "file://")
	if !filepath.IsAbs(p) || path.Base(filepath.ToSlash(p)) == "." {
		return "", "", fmt.Errorf("objstore: %q is neither s3://bucket/key nor an absolute file path", uri)
	}
	return filepath.Dir(p), filepath.Base(p), nil
}
