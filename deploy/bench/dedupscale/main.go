// Command dedupscale measures `embedfleet dedup` as a collection grows, as
// `make bench-dedup` runs it: it fills a milvus-lite collection with
// synthetic unit vectors (the dimension of CLIP ViT-B/32 by default) in
// which groups of copies (a base vector and noisy variants) and exact
// duplicates (the same vector and content hash) are planted, plus a
// background set of unrelated vectors; at each size it runs the dedup
// binary as a child process and prints, per size,
//
//	dedup_scale vectors=N dim=D k=K wall_s=.. vectors_s=.. rss_mb=.. planted_pairs=.. found_pairs=.. pair_recall=.. pair_precision=..
//
// rss_mb is the dedup process's peak resident set (VmHWM, sampled while it
// runs: getrusage would report this process's size, which holds the rows). Pairs are
// counted inside the copy groups it writes: two rows in one group are a
// found pair; planted pairs are those of the planted groups (copies and
// exact duplicates). Vectors are synthetic so that the size is cheap to
// reach and the truth is known; embedding cost is measured elsewhere.
package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func main() {
	sizes := flag.String("sizes", "25000,50000,100000", "collection sizes to measure at, ascending")
	dim := flag.Int("dim", 512, "vector dimension (512: CLIP ViT-B/32's)")
	k := flag.Int("k", 10, "dedup --k")
	batch := flag.Int("batch", 512, "dedup --batch")
	bgN := flag.Int("background", 2000, "background vectors")
	copyEvery := flag.Int("copy-every", 50, "one planted copy group (a base and 2 variants) per this many vectors, and one exact pair per twice as many")
	bin := flag.String("bin", "bin/embedfleet", "the embedfleet binary")
	milvusBin := flag.String("milvus-bin", os.Getenv("EMBEDFLEET_MILVUS_BIN"), "milvus-lite server binary")
	threshold := flag.Float64("threshold", 0.5, "dedup --threshold (normalised score)")
	flag.Parse()
	if err := run(*sizes, *dim, *k, *batch, *bgN, *copyEvery, *bin, *milvusBin, *threshold); err != nil {
		fmt.Fprintln(os.Stderr, "dedupscale:", err)
		os.Exit(1)
	}
}

// model is the collection's name: a built-in model, so that dedup knows its
// spec without a models folder; the vectors are synthetic all the same.
const model = "clip-vit-b32"

func run(sizeList string, dim, k, batch, bgN, copyEvery int, bin, milvusBin string, threshold float64) error {
	var sizes []int
	for _, s := range strings.Split(sizeList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 100 || (len(sizes) > 0 && n <= sizes[len(sizes)-1]) {
			return fmt.Errorf("--sizes %q: want ascending sizes of at least 100", sizeList)
		}
		sizes = append(sizes, n)
	}
	if milvusBin == "" {
		return errors.New("--milvus-bin (or EMBEDFLEET_MILVUS_BIN) is required")
	}
	dir, err := os.MkdirTemp("", "dedupscale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mv, err := stack.StartMilvusLite(milvusBin, dir, "")
	if err != nil {
		return err
	}
	defer mv.Stop(10 * time.Second)
	ctx := context.Background()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr, CallTimeout: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	spec, _ := embed.Builtin(model)
	spec.Dim = dim
	col, err := st.Ensure(ctx, spec)
	if err != nil {
		return err
	}
	bgSpec := spec
	bgSpec.Name = vecstore.Target(model, vecstore.SetBackground)
	bg, err := st.Ensure(ctx, bgSpec)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(2026, 12))
	var rows []vecstore.Row
	for i := range bgN {
		rows = append(rows, row(fmt.Sprintf("s3://bench/background/%07d.jpg", i), unit(r, dim), fmt.Sprintf("bg%d", i)))
	}
	if err := upsert(ctx, bg, rows); err != nil {
		return err
	}

	planted := map[[2]string]bool{}
	made := 0
	seq := 0
	for _, n := range sizes {
		t0 := time.Now()
		rows = rows[:0]
		for made < n {
			base := unit(r, dim)
			seq++
			switch {
			case seq%copyEvery == 0 && made+3 <= n: // a copy group: base and two variants
				g := []string{}
				for j := range 3 {
					v := base
					if j > 0 {
						v = noisy(r, base, 0.12)
					}
					uri := fmt.Sprintf("s3://bench/photos/%07d-copy%d.jpg", made, j)
					rows = append(rows, row(uri, v, uri))
					g = append(g, vecstore.ID(uri))
				}
				addPairs(planted, g)
				made += 3
			case seq%(2*copyEvery) == 1 && made+2 <= n: // an exact pair: same vector, same bytes
				g := []string{}
				for j := range 2 {
					uri := fmt.Sprintf("s3://bench/photos/%07d-same%d.jpg", made, j)
					rows = append(rows, row(uri, base, fmt.Sprintf("same%d", made)))
					g = append(g, vecstore.ID(uri))
				}
				addPairs(planted, g)
				made += 2
			default:
				uri := fmt.Sprintf("s3://bench/photos/%07d.jpg", made)
				rows = append(rows, row(uri, base, uri))
				made++
			}
		}
		if err := upsert(ctx, col, rows); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "dedupscale: %d vectors stored (%.0f s)\n", made, time.Since(t0).Seconds())
		if err := measure(ctx, col, bin, mv.Addr, dir, n, dim, k, batch, threshold, planted); err != nil {
			return err
		}
	}
	return nil
}

func measure(ctx context.Context, col *vecstore.Collection, bin, addr, dir string, n, dim, k, batch int, threshold float64, planted map[[2]string]bool) error {
	out := filepath.Join(dir, fmt.Sprintf("out-%d", n))
	cmd := exec.CommandContext(ctx, bin, "dedup", "--model", model, "--milvus-addr", addr, "--out", out, "--k", strconv.Itoa(k),
		"--batch", strconv.Itoa(batch), "--threshold", strconv.FormatFloat(threshold, 'f', -1, 64), "--thumbnails=false")
	cmd.Stderr = os.Stderr
	var stdout strings.Builder
	cmd.Stdout = &stdout
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	peak := stack.WatchPeakRSS(cmd.Process.Pid)
	err := cmd.Wait()
	rss := float64(peak()) / 1024
	if err != nil {
		return fmt.Errorf("dedup at %d: %w", n, err)
	}
	wall := time.Since(t0)
	found, err := foundPairs(filepath.Join(out, "groups.csv"))
	if err != nil {
		return err
	}
	hit := 0
	for p := range found {
		if planted[p] {
			hit++
		}
	}
	recall, precision := 0.0, 1.0
	if len(planted) > 0 {
		recall = float64(hit) / float64(len(planted))
	}
	if len(found) > 0 {
		precision = float64(hit) / float64(len(found))
	}
	fmt.Print(stdout.String())
	fmt.Printf("dedup_scale vectors=%d dim=%d k=%d wall_s=%.1f vectors_s=%.0f rss_mb=%.0f planted_pairs=%d found_pairs=%d pair_recall=%.4f pair_precision=%.4f\n",
		n, dim, k, wall.Seconds(), float64(n)/wall.Seconds(), rss, len(planted), len(found), recall, precision)
	return nil
}

// foundPairs are the pairs of rows that share a copy group in groups.csv.
func foundPairs(path string) (map[[2]string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, err
	}
	groups := map[string][]string{}
	for _, r := range recs[1:] {
		if r[1] == "copy" {
			groups[r[0]] = append(groups[r[0]], r[2])
		}
	}
	out := map[[2]string]bool{}
	for _, g := range groups {
		addPairs(out, g)
	}
	return out, nil
}

func addPairs(m map[[2]string]bool, ids []string) {
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			m[[2]string{min(ids[i], ids[j]), max(ids[i], ids[j])}] = true
		}
	}
}

func row(uri string, v []float32, content string) vecstore.Row {
	return vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Size: 1, Width: 1, Height: 1, Vector: v, SHA256: vecstore.ID(content) + vecstore.ID(content)}
}

func upsert(ctx context.Context, col *vecstore.Collection, rows []vecstore.Row) error {
	for first := 0; first < len(rows); first += 2000 {
		if err := col.Upsert(ctx, rows[first:min(first+2000, len(rows))]); err != nil {
			return err
		}
	}
	return nil
}

func unit(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	embed.Normalize(v)
	return v
}

// noisy is v moved by a random vector of norm s (cosine about 1/sqrt(1+s^2)).
func noisy(r *rand.Rand, v []float32, s float64) []float32 {
	n := unit(r, len(v))
	out := make([]float32, len(v))
	for i := range v {
		out[i] = v[i] + float32(s)*n[i]
	}
	embed.Normalize(out)
	return out
}
