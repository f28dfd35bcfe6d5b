package objstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// local is a folder on disk. Keys are slash-separated paths relative to it.
// Listing walks the tree and sorts the keys (S3's order), which holds all
// keys in memory: fine for development and tests, not for millions of files.
type local struct {
	root string
	f    Filter
}

func newLocal(root string, f Filter) (*local, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("objstore: %s is not a folder", abs)
	}
	return &local{root: abs, f: f}, nil
}

func (l *local) URI() string                 { return l.root }
func (l *local) ObjectURI(key string) string { return filepath.Join(l.root, filepath.FromSlash(key)) }
func (l *local) RowPrefix() string {
	return strings.TrimSuffix(l.root, string(filepath.Separator)) + string(filepath.Separator)
}

func (l *local) KeyOf(uri string) (string, bool) {
	rest, ok := strings.CutPrefix(uri, l.RowPrefix())
	return filepath.ToSlash(rest), ok && rest != ""
}

func (l *local) Stat(_ context.Context, key string) (bool, error) {
	_, err := os.Stat(l.ObjectURI(key))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("objstore: %w", err)
	}
	return true, nil
}

func (l *local) List(ctx context.Context, after string, fn func(Object) error) error {
	var objs []Object
	err := filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if key <= after || !l.f.Match(key) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		objs = append(objs, Object{Key: key, Size: info.Size(),
			ETag: strconv.FormatInt(info.Size(), 16) + "-" + strconv.FormatInt(info.ModTime().UnixNano(), 16)})
		return nil
	})
	if err != nil {
		return fmt.Errorf("objstore: list %s: %w", l.root, err)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

func (l *local) Get(_ context.Context, key string, max int64) ([]byte, error) {
	p := l.ObjectURI(key)
	if rel, err := filepath.Rel(l.root, p); err != nil || rel == ".." || len(rel) > 2 && rel[:3] == ".."+string(filepath.Separator) {
		return nil, fmt.Errorf("%w: %s is outside %s", ErrNotFound, key, l.root)
	}
	f, err := OpenFile(p)
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	data, err := readSized(f, size, max)
	if errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, p, max)
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: read %s: %w", p, err)
	}
	return data, nil
}

// OpenFile opens a local file that is input (an image, a text file, a
// token): only a regular file. The open itself never waits, so a FIFO or a
// device named by mistake (or put in a folder being indexed) is refused at
// once instead of blocking the process beyond the reach of SIGINT and
// SIGTERM.
func OpenFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		what := "not a regular file"
		switch t := st.Mode().Type(); {
		case t&fs.ModeDir != 0:
			what = "a folder"
		case t&fs.ModeNamedPipe != 0:
			what = "a FIFO"
		case t&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			what = "a device"
		case t&fs.ModeSocket != 0:
			what = "a socket"
		}
		return nil, fmt.Errorf("%w: %s is %s, not a regular file", ErrNotRegular, path, what)
	}
	// Back to blocking reads (regular files ignore the flag on Linux; this
	// keeps reads the same elsewhere).
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ErrNotRegular is returned by OpenFile for anything but a regular file.
var ErrNotRegular = errors.New("not a regular file")
