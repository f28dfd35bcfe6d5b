// Package manifest holds `make bench-manifest`: the streaming diff of two
// sorted listings of BENCH_KEYS keys (default 1,000,000) with 1% changed,
// 1% added and 1% deleted, reading the old one from a compressed manifest
// file as a run does. It prints
//
//	manifest keys_s=X peak_rss_mb=Y keys=N
//
// where keys_s counts listing keys diffed per second and peak_rss_mb is the
// process's peak resident set (VmHWM), which must not grow with N.
package manifest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/manifest"
)

func peakRSSMB(b *testing.B) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb / 1024
		}
	}
	return -1
}

func BenchmarkManifestDiff(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("BENCH_KEYS")); err == nil {
		n = v
	}
	// Keys sort as their index does (fixed-width), so i walks them in order.
	path := filepath.Join(b.TempDir(), "old.manifest")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w, _ := manifest.NewWriter(f, manifest.Header{Model: "m", Version: "v"})
	for i := 0; i < n; i++ {
		if i%100 == 50 { // 1% will be "added" in the new listing: absent from the old
			continue
		}
		if err := w.Write(manifest.Entry{Key: fmt.Sprintf("k%010d", i), ETag: "etag-old", Size: 1000}); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	f.Close()

	f, _ = os.Open(path)
	defer f.Close()
	r, err := manifest.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		b.Fatal(err)
	}
	c := manifest.NewCursor(r)
	var counts manifest.Counts
	gone := func(manifest.Entry) error { counts.Deleted++; return nil }
	start := time.Now()
	listed := 0
	for i := 0; i < n; i++ {
		if i%100 == 70 { // 1% deleted: in the old manifest, not listed now
			continue
		}
		e := manifest.Entry{Key: fmt.Sprintf("k%010d", i), ETag: "etag-old", Size: 1000}
		if i%100 == 10 { // 1% changed
			e.ETag = "etag-new"
		}
		listed++
		old, found, err := c.Seek(e.Key, gone)
		if err != nil {
			b.Fatal(err)
		}
		switch {
		case !found:
			counts.New++
		case old.Same(e):
			counts.Unchanged++
		default:
			counts.Changed++
		}
	}
	if err := c.Rest(gone); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	if counts.New != int64(n/100) || counts.Changed != int64(n/100) || counts.Deleted != int64(n/100) {
		b.Fatalf("diff %+v, want 1%% each of %d", counts, n)
	}
	fmt.Printf("manifest keys_s=%.0f peak_rss_mb=%d keys=%d\n", float64(listed)/el.Seconds(), peakRSSMB(b), n)
}
