// Command annbench measures what a real Milvus server's ANN indexes return
// and what its consistency levels cost, through embedfleet's own store
// (shared/vecstore): recall@k against exact search of HNSW and IVF_FLAT at
// several search parameters (embedfleet's defaults among them), search
// latency at Strong and at Bounded, and upserts/s, on clustered synthetic
// vectors (Gaussian clusters, unit length, as embeddings are).
//
//	go run ./deploy/bench/annbench [--n 100000] [--dim 512] [--queries 200]
//
// It starts its own Milvus server (deploy/install/deps.sh milvus-server;
// EMBEDFLEET_MILVUS_SERVER_HOME, as deps.sh --env sets it) in a temporary
// folder, or uses --addr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func main() {
	n := flag.Int("n", 100000, "vectors indexed")
	dim := flag.Int("dim", 512, "their dimension")
	clusters := flag.Int("clusters", 200, "Gaussian clusters the vectors are drawn around")
	spread := flag.Float64("spread", 0.35, "a vector's distance from its cluster's centre, relative to the centre's")
	queries := flag.Int("queries", 200, "queries (drawn like the vectors, not among them)")
	k := flag.Int("k", 10, "hits per query")
	addr := flag.String("addr", "", "a Milvus server to use (default: start one)")
	flag.Parse()
	if err := run(*addr, *n, *dim, *clusters, *spread, *queries, *k); err != nil {
		log.Fatal(err)
	}
}

func run(addr string, n, dim, clusters int, spread float64, nq, k int) error {
	ctx := context.Background()
	if addr == "" {
		home := os.Getenv("EMBEDFLEET_MILVUS_SERVER_HOME")
		if home == "" {
			return errors.New("EMBEDFLEET_MILVUS_SERVER_HOME is not set: eval \"$(deploy/install/deps.sh --env)\" after deps.sh milvus-server")
		}
		dir, err := os.MkdirTemp("", "annbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := stack.StartMilvusServer(home, dir)
		if err != nil {
			return err
		}
		defer srv.Stop(10 * time.Second)
		addr = srv.Addr
	}
	r := rand.New(rand.NewPCG(42, 42))
	centres := make([][]float32, clusters)
	for i := range centres {
		centres[i] = gauss(r, dim, 1, nil)
	}
	draw := func() []float32 {
		c := centres[r.IntN(clusters)]
		return gauss(r, dim, spread, c)
	}
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = draw()
	}
	qs := make([][]float32, nq)
	for i := range qs {
		qs[i] = draw()
	}
	truth := exact(vecs, qs, k)
	cpu := cpuName()
	fmt.Printf("annbench n=%d dim=%d clusters=%d spread=%.2f queries=%d k=%d cpus=%d cpu=%q\n", n, dim, clusters, spread, nq, k, runtime.NumCPU(), cpu)

	for _, it := range []struct {
		typ    string
		params []int // ef for HNSW, nprobe for IVF
	}{{"HNSW", []int{k, vecstore.DefaultSearchEf, 256}}, {"IVF_FLAT", []int{1, 8, vecstore.DefaultSearchNProbe, 128}}} {
		name := fmt.Sprintf("annbench_%s", it.typ)
		cfg := vecstore.Config{Address: addr, IndexType: it.typ, CallTimeout: 5 * time.Minute}
		st, err := vecstore.Connect(ctx, cfg)
		if err != nil {
			return err
		}
		spec, _ := embed.Builtin("clip-vit-b32")
		spec.Name, spec.Version, spec.Dim = name, "sha256:annbench", dim
		col, err := st.Ensure(ctx, spec)
		if err != nil {
			return err
		}
		start := time.Now()
		const batch = 1024
		for lo := 0; lo < n; lo += batch {
			rows := make([]vecstore.Row, 0, batch)
			for i := lo; i < min(lo+batch, n); i++ {
				uri := fmt.Sprintf("s3://bench/%07d.jpg", i)
				rows = append(rows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: vecs[i]})
			}
			if err := col.Upsert(ctx, rows); err != nil {
				return err
			}
		}
		upsertS := time.Since(start).Seconds()
		if err := flushAndIndex(ctx, addr, col.Name, n); err != nil {
			return err
		}
		indexS := time.Since(start).Seconds() - upsertS
		fmt.Printf("annbench index=%s upserts_s=%.0f rows=%d upsert_wall_s=%.1f index_wall_s=%.1f\n", it.typ, float64(n)/upsertS, n, upsertS, indexS)
		st.Close(ctx)
		for _, p := range it.params {
			c := cfg
			c.SearchEf, c.SearchNProbe = p, p
			rec, lat, err := measure(ctx, c, name, qs, truth, k, 0)
			if err != nil {
				return err
			}
			param := "ef"
			if it.typ != "HNSW" {
				param = "nprobe"
			}
			def := ""
			if p == vecstore.DefaultSearchEf && it.typ == "HNSW" || p == vecstore.DefaultSearchNProbe && it.typ != "HNSW" {
				def = " (embedfleet's default)"
			}
			fmt.Printf("annbench index=%s %s=%d recall@%d=%.3f p50_ms=%.1f p99_ms=%.1f%s\n", it.typ, param, p, k, rec, pct(lat, 50), pct(lat, 99), def)
		}
		// The consistency levels, at the default parameters, side by side.
		for _, lvl := range []entity.ConsistencyLevel{entity.ClStrong, entity.ClBounded} {
			_, lat, err := measure(ctx, cfg, name, qs, truth, k, lvl)
			if err != nil {
				return err
			}
			fmt.Printf("annbench index=%s consistency=%s p50_ms=%.1f p99_ms=%.1f\n", it.typ, lvl.CommonConsistencyLevel(), pct(lat, 50), pct(lat, 99))
		}
	}
	return nil
}

// measure searches name with each query, one at a time, and returns
// recall@k against truth and the latencies.
func measure(ctx context.Context, cfg vecstore.Config, name string, qs [][]float32, truth [][]int, k int, lvl entity.ConsistencyLevel) (float64, []float64, error) {
	cfg.SearchConsistency = lvl
	st, err := vecstore.Connect(ctx, cfg)
	if err != nil {
		return 0, nil, err
	}
	defer st.Close(ctx)
	col, err := st.Open(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	if _, err := col.Search(ctx, qs[0], k); err != nil { // warm up: the index description is read once
		return 0, nil, err
	}
	found, lat := 0, make([]float64, 0, len(qs))
	for i, q := range qs {
		t0 := time.Now()
		hits, err := col.Search(ctx, q, k)
		if err != nil {
			return 0, nil, err
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
		want := map[string]bool{}
		for _, j := range truth[i] {
			want[vecstore.ID(fmt.Sprintf("s3://bench/%07d.jpg", j))] = true
		}
		for _, h := range hits {
			if want[h.ID] {
				found++
			}
		}
	}
	return float64(found) / float64(len(qs)*k), lat, nil
}

// flushAndIndex seals what was written and waits until the index covers
// every row, so that searches go through the index, not brute force over
// growing segments.
func flushAndIndex(ctx context.Context, addr, name string, n int) error {
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: addr})
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	task, err := c.Flush(ctx, milvusclient.NewFlushOption(name))
	if err != nil {
		return err
	}
	if err := task.Await(ctx); err != nil {
		return err
	}
	names, err := c.ListIndexes(ctx, milvusclient.NewListIndexOption(name))
	if err != nil || len(names) == 0 {
		return fmt.Errorf("indexes of %s: %v %v", name, names, err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		d, err := c.DescribeIndex(ctx, milvusclient.NewDescribeIndexOption(name, names[0]))
		if err != nil {
			return err
		}
		if d.IndexedRows >= int64(n) && d.PendingIndexRows == 0 {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("index of %s not built in 30 minutes", name)
}

// gauss is centre (or the origin) plus Gaussian noise of scale, normalised.
func gauss(r *rand.Rand, dim int, scale float64, centre []float32) []float32 {
	v := make([]float32, dim)
	var norm float64
	if centre != nil {
		for _, x := range centre {
			norm += float64(x) * float64(x)
		}
		norm = math.Sqrt(norm / float64(dim))
	}
	for i := range v {
		x := r.NormFloat64() * scale
		if centre != nil {
			x = float64(centre[i]) + x*norm
		}
		v[i] = float32(x)
	}
	embed.Normalize(v)
	return v
}

// exact is the true top k of each query by cosine (the vectors are unit
// length), computed on every core.
func exact(vecs, qs [][]float32, k int) [][]int {
	out := make([][]int, len(qs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			type hit struct {
				i int
				s float32
			}
			for qi := range next {
				q := qs[qi]
				best := make([]hit, 0, k+1)
				for i, v := range vecs {
					var s float32
					for j := range v {
						s += v[j] * q[j]
					}
					if len(best) < k || s > best[len(best)-1].s {
						best = append(best, hit{i, s})
						sort.Slice(best, func(a, b int) bool { return best[a].s > best[b].s })
						best = best[:min(len(best), k)]
					}
				}
				ids := make([]int, len(best))
				for j, h := range best {
					ids[j] = h.i
				}
				out[qi] = ids
			}
		}()
	}
	for i := range qs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

func pct(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

func cpuName() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
