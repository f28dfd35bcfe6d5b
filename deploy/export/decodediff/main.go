// Command decodediff decodes files with embedfleet's decoder and writes what
// it got, for deploy/export/decode_diff.py to compare with Pillow:
//
//	go run ./deploy/export/decodediff --out DIR PATH...
//
// Each PATH is a file or a folder (read recursively). Files in Go's fuzz
// corpus format ("go test fuzz v1" then a []byte literal) are unquoted first.
// DIR receives index.json (one record per input: its path, format, size or
// error), N.rgb (the decoded 8-bit RGB rows) for each decoded input, and N.bin
// (the raw bytes) for each unquoted corpus entry.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// record is one input's outcome; the Python side reads these field names.
type record struct {
	ID     int    `json:"id"`
	Path   string `json:"path"`            // the input as named
	Bytes  string `json:"bytes"`           // the file holding the raw bytes
	Format string `json:"format"`          // as sniffed; "" for unknown
	Width  int    `json:"width"`           // decoded, after EXIF orientation
	Height int    `json:"height"`          //
	Error  string `json:"error,omitempty"` // the decoder's error
}

func main() {
	out := flag.String("out", "", "folder for index.json and the decoded pixels (required)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: decodediff --out DIR PATH...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "decodediff:", err)
		os.Exit(1)
	}
}

func run(out string, roots []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var paths []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				paths = append(paths, p)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	recs := make([]record, 0, len(paths))
	for i, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r := record{ID: i, Path: p, Bytes: p}
		if bytes.HasPrefix(data, []byte("go test fuzz v1\n")) {
			if data, err = unquoteCorpus(data); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			r.Bytes = filepath.Join(out, fmt.Sprintf("%d.bin", i))
			if err := os.WriteFile(r.Bytes, data, 0o644); err != nil {
				return err
			}
		}
		r.Format = imageprep.Sniff(data)
		img, _, err := dec.Decode(data)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Width, r.Height = img.Width, img.Height
			if err := os.WriteFile(filepath.Join(out, fmt.Sprintf("%d.rgb", i)), img.Pix[:img.Width*img.Height*3], 0o644); err != nil {
				return err
			}
		}
		recs = append(recs, r)
	}
	j, err := json.MarshalIndent(recs, "", " ")
	if err != nil {
		return err
	}
	fmt.Printf("decodediff: %d inputs -> %s\n", len(recs), out)
	return os.WriteFile(filepath.Join(out, "index.json"), j, 0o644)
}

// unquoteCorpus reads a one-value []byte entry of Go's fuzz corpus format.
func unquoteCorpus(data []byte) ([]byte, error) {
	_, body, _ := strings.Cut(string(data), "\n")
	body = strings.TrimSpace(body)
	lit, ok := strings.CutPrefix(body, "[]byte(")
	if !ok || !strings.HasSuffix(lit, ")") {
		return nil, errors.New("not a one-value []byte corpus entry")
	}
	s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	if err != nil {
		return nil, fmt.Errorf("corpus entry: %w", err)
	}
	return []byte(s), nil
}
