package coordinator_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// syntheticSource lists n objects that exist only as names, in key order;
// gen changes the ETag of every hundredth, as a re-upload would. It lets a
// benchmark measure the coordinator's own cost at a size no bucket on a
// development machine holds.
type syntheticSource struct {
	n, gen int
}

func (s syntheticSource) key(i int) string { return fmt.Sprintf("imgs/%09d.jpg", i) }

func (s syntheticSource) List(ctx context.Context, after string, fn func(objstore.Object) error) error {
	for i := 0; i < s.n; i++ {
		k := s.key(i)
		if k <= after {
			continue
		}
		g := 0
		if i%100 == 0 {
			g = s.gen
		}
		if err := fn(objstore.Object{Key: k, ETag: fmt.Sprintf("%032x", i*7+g), Size: 150_000}); err != nil {
			return err
		}
	}
	return nil
}

func (s syntheticSource) Get(context.Context, string, int64) ([]byte, error) {
	return nil, objstore.ErrNotFound
}
func (s syntheticSource) Stat(context.Context, string) (bool, error) { return true, nil }
func (s syntheticSource) URI() string                                { return "s3://synthetic/imgs/" }
func (s syntheticSource) ObjectURI(key string) string                { return "s3://synthetic/" + key }
func (s syntheticSource) KeyOf(uri string) (string, bool) {
	return strings.CutPrefix(uri, "s3://synthetic/")
}
func (s syntheticSource) RowPrefix() string { return "s3://synthetic/imgs/" }

type noDeletes struct{}

func (noDeletes) DeleteObjects(context.Context, string, []string) error { return nil }

// BenchmarkIncrementalControl times what an incremental run costs the
// coordinator outside the workers, at EMBEDFLEET_BENCH_OBJECTS objects
// (default 1,000,000) and two models, against a nats-server process with
// file storage synced on every write (as the soak runs it): the first run's
// listing and publishing, its Finish (one manifest per model into the
// JetStream object store), then a second run over the same listing with 1%
// of the ETags changed (reading the manifests back and diffing) and its
// Finish. The jobs are never embedded; Finish is handed a complete summary.
//
//	go test -run '^$' -bench BenchmarkIncrementalControl -benchtime 1x ./coordinator
func BenchmarkIncrementalControl(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("EMBEDFLEET_BENCH_OBJECTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("EMBEDFLEET_BENCH_OBJECTS: %v", err)
		}
	}
	nt := testenv.StartNATSProcess(b)
	ctx := context.Background()
	models := []string{"clip-vit-b32", "dinov2-base"}
	for i := 0; i < b.N; i++ {
		topo := bus.Topology{Prefix: fmt.Sprintf("bench%d", i)}
		if err := topo.Ensure(ctx, nt.JS, bus.StreamOptions{}); err != nil {
			b.Fatal(err)
		}
		for gen := 0; gen < 2; gen++ {
			t0 := time.Now()
			inc, err := coordinator.RunIncremental(ctx, coordinator.IncrementalConfig{
				Config: coordinator.Config{JS: nt.JS, Topology: topo, Source: syntheticSource{n: n, gen: gen},
					Models: models, JobSize: 256, Versions: map[string]string{"clip-vit-b32": "v1", "dinov2-base": "v1"}},
				Store: noDeletes{}})
			if err != nil {
				b.Fatal(err)
			}
			listed := time.Since(t0)
			t1 := time.Now()
			err = inc.Finish(ctx, coordinator.Summary{Run: inc.Run.ID, Listed: inc.Run.Listed, Jobs: inc.Run.Jobs,
				Done: inc.Run.Jobs, Stored: inc.Run.Listed, Complete: true})
			finished := time.Since(t1)
			inc.Close()
			if err != nil {
				b.Fatal(err)
			}
			d := inc.Run.Diff[models[0]]
			if want := int64(n); gen == 0 && d.New != want {
				b.Fatalf("first run: %d new, want %d", d.New, want)
			}
			if want := int64((n + 99) / 100); gen == 1 && d.Changed != want {
				b.Fatalf("second run: %d changed, want %d", d.Changed, want)
			}
			fmt.Printf("incremental run=%d objects=%d jobs=%d new=%d changed=%d list_publish_s=%.1f finish_s=%.1f\n",
				gen+1, n, inc.Run.Jobs, d.New, d.Changed, listed.Seconds(), finished.Seconds())
		}
	}
}
