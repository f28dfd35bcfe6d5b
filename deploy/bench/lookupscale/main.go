// Command lookupscale measures what verify's reads cost as a milvus-lite
// collection grows, and what its writes cost: an upsert of 32 and of
// 1,024 new rows (the worker's writes), a point lookup of B ids (verify checks the listing in
// batches of B), a scan of ids and URIs (verify's search for extra rows),
// and a scan with vectors (dedup's), at 25k to 200k rows of 16-d vectors.
//
//	go run ./deploy/bench/lookupscale [--max 200000]
//
// It starts its own milvus-lite (EMBEDFLEET_MILVUS_BIN, as deps.sh --env
// sets it) in a temporary folder.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func main() {
	maxRows := flag.Int("max", 200000, "largest collection measured (sizes double from 25,000)")
	flag.Parse()
	if err := run(*maxRows); err != nil {
		log.Fatal(err)
	}
}

func run(maxRows int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lookupscale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mv, err := stack.StartMilvusLite(os.Getenv("EMBEDFLEET_MILVUS_BIN"), dir, "")
	if err != nil {
		return err
	}
	defer mv.Stop(5 * time.Second)
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	spec, _ := embed.Builtin("clip-vit-b32")
	spec.Name, spec.Version, spec.Dim = "lookupscale", "sha256:1234567890ab", 16
	col, err := st.Ensure(ctx, spec)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	uri := func(i int) string { return fmt.Sprintf("s3://b/%08d.jpg", i) }
	n := 0
	newRows := func(k int) []vecstore.Row {
		rows := make([]vecstore.Row, 0, k)
		for range k {
			v := make([]float32, 16)
			for i := range v {
				v[i] = r.Float32()
			}
			embed.Normalize(v)
			rows = append(rows, vecstore.Row{ID: vecstore.ID(uri(n)), URI: uri(n), ETag: "e", Vector: v})
			n++
		}
		return rows
	}
	for size := 25000; size <= maxRows; size *= 2 {
		for n < size {
			if err := col.Upsert(ctx, newRows(1000)); err != nil {
				return err
			}
		}
		line := fmt.Sprintf("lookupscale rows=%d", n)
		// Upserts of new rows, B at a time (the worker writes one embed
		// batch per call, or several coalesced).
		for _, b := range []int{32, 1024} {
			const rounds = 5
			start := time.Now()
			for range rounds {
				if err := col.Upsert(ctx, newRows(b)); err != nil {
					return err
				}
			}
			per := time.Since(start) / rounds
			line += fmt.Sprintf(" upsert%d_ms=%.1f rows_per_s_b%d=%.0f", b, per.Seconds()*1000, b, float64(b)/per.Seconds())
		}
		for _, b := range []int{256, 2048} {
			ids := make([]string, b)
			const rounds = 10
			start := time.Now()
			for range rounds {
				for i := range ids {
					ids[i] = vecstore.ID(uri(r.IntN(n)))
				}
				if _, err := col.Lookup(ctx, ids); err != nil {
					return err
				}
			}
			per := time.Since(start) / rounds
			line += fmt.Sprintf(" lookup%d_ms=%.1f ids_per_s_b%d=%.0f", b, per.Seconds()*1000, b, float64(b)/per.Seconds())
		}
		start := time.Now()
		if err := col.EachWithPrefix(ctx, "s3://b/", func(string, string) error { return nil }); err != nil {
			return err
		}
		line += fmt.Sprintf(" scan_ids_s=%.2f", time.Since(start).Seconds())
		start = time.Now()
		if err := col.Scan(ctx, "", 1000, func([]vecstore.Row) error { return nil }); err != nil {
			return err
		}
		fmt.Println(line + fmt.Sprintf(" scan_vectors_s=%.2f", time.Since(start).Seconds()))
	}
	return nil
}
