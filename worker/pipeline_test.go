package worker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
	"github.com/embedfleet/embedfleet/worker"
)

func encode(t *testing.T, m image.Image, q int) []byte { return testimages.JPEG(m, q) }

type stack struct {
	minio  *testenv.MinIO
	nats   *testenv.NATS
	milvus *testenv.Milvus
	store  *vecstore.Store
	topo   bus.Topology
	s3     objstore.S3Config
	models []*embed.Model
	// decOpts: how startWorkers' workers decode.
	decOpts []imageprep.DecoderOption
}

func newStack(t *testing.T) *stack {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatal(err)
	}
	st := &stack{minio: testenv.StartMinIO(t), nats: testenv.StartNATS(t), milvus: testenv.StartMilvus(t)}
	st.topo = bus.Topology{Prefix: strings.ToUpper(testenv.Name(t, "ef"))}
	ctx := context.Background()
	if err := st.topo.Ensure(ctx, st.nats.JS, bus.StreamOptions{LeaseTTL: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if st.store, err = vecstore.Connect(ctx, vecstore.Config{Address: st.milvus.Addr}); err != nil {
		t.Fatal(err)
	}
	st.s3 = objstore.S3Config{Endpoint: st.minio.Endpoint, AccessKey: st.minio.AccessKey, SecretKey: st.minio.SecretKey, Insecure: true, PathStyle: true}
	for _, name := range []string{"clip-vit-b32", "dinov2-base"} {
		m, err := embed.Open(filepath.Join(root, "shared", "embed", "testdata", "models", name), embed.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		st.models = append(st.models, m)
	}
	return st
}

func (st *stack) put(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := st.minio.Client.PutObject(context.Background(), st.minio.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// putPhotos puts n generated photos (sides from minSide to maxSide, drawn
// with r) at imgs/000.jpg, imgs/001.jpg, ...
func (st *stack) putPhotos(t *testing.T, r *rand.Rand, n, minSide, maxSide int) {
	t.Helper()
	for i := range n {
		st.put(t, fmt.Sprintf("imgs/%03d.jpg", i), encode(t, testimages.Photo(r, minSide, maxSide), 90))
	}
}

// searcher searches st's collections, embedding queries with st's models
// decoded with opts.
func (st *stack) searcher(t *testing.T, opts ...imageprep.DecoderOption) *search.Searcher {
	t.Helper()
	var encs []engine.ImageEncoder
	for _, m := range st.models {
		encs = append(encs, m)
	}
	eng, err := engine.New(engine.Options{Limits: imageprepLimits, DecoderOptions: opts}, encs, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	return search.New(st.store, eng)
}

func (st *stack) startWorkers(t *testing.T, ctx context.Context, n int) *sync.WaitGroup {
	t.Helper()
	cons, err := st.topo.WorkerConsumer(ctx, st.nats.JS, bus.ConsumerOptions{AckWait: 30 * time.Second, MaxDeliver: 5})
	if err != nil {
		t.Fatal(err)
	}
	var embedders []engine.ImageEncoder
	for _, m := range st.models {
		embedders = append(embedders, m)
	}
	var wg sync.WaitGroup
	for i := range n {
		w, err := worker.New(ctx, worker.Config{
			JS: st.nats.JS, Topology: st.topo, Consumer: cons, Models: embedders, Store: st.store,
			OpenSource: func(uri string) (objstore.Source, error) { return objstore.Open(uri, st.s3, objstore.Filter{}) },
			BatchSize:  8, PrepWorkers: 2, Name: fmt.Sprintf("w%d", i), DecoderOptions: st.decOpts,
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(ctx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		}()
	}
	return &wg
}

// TestPipelineEndToEnd: 300 images and 5 broken objects in MinIO, 2
// workers, 2 models. Exactly 300 rows per collection, 5 failures with
// reasons, the run complete; resized re-encoded copies of 20 images find
// their originals first through the query path.
func TestPipelineEndToEnd(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	r := rand.New(rand.NewPCG(1, 2))
	var originals []*image.RGBA
	for i := range 300 {
		m := testimages.Photo(r, 96, 216)
		originals = append(originals, m)
		st.put(t, fmt.Sprintf("imgs/%03d.jpg", i), encode(t, m, 90))
	}
	good := encode(t, originals[0], 90)
	broken := map[string][]byte{
		"imgs/broken-truncated.jpg": good[:len(good)/2],
		"imgs/broken-empty.jpg":     {},
		"imgs/broken-text.jpg":      []byte("this is not a picture\n"),
		"imgs/broken-html.png":      []byte("<html><body>Not found</body></html>"),
		"imgs/broken-bomb.png":      pngHeader(30000, 30000),
	}
	for k, v := range broken {
		st.put(t, k, v)
	}

	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 2)
	defer func() { stopWorkers(); wg.Wait() }()

	src, err := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	models := []string{"clip-vit-b32", "dinov2-base"}
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 16})
	if err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	if rec.Listed != 305 || rec.Jobs != 20 || !rec.Enumerated {
		t.Fatalf("run record %+v: want 305 listed in 20 jobs, enumerated", rec)
	}
	// As if the listing had taken an hour: the summary's time (and so the
	// img/s it prints) runs from the run's start, not from the wait's.
	rec.Started = rec.Started.Add(-time.Hour)
	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil)
	if err != nil {
		t.Fatalf("wait: %v (%+v)", err, sum)
	}
	if sum.Elapsed < time.Hour {
		t.Errorf("summary elapsed %v: want it from the run's start, an hour ago", sum.Elapsed)
	}
	if !sum.Complete || sum.Stored != 300 || len(sum.Failed) != 5 {
		t.Fatalf("summary: complete=%v stored=%d failed=%d %+v", sum.Complete, sum.Stored, len(sum.Failed), sum.Failed)
	}
	for _, f := range sum.Failed {
		if _, ok := broken[f.Key]; !ok || f.Reason == "" {
			t.Errorf("unexpected failure %+v", f)
		}
		t.Logf("failed as expected: %s: %s", f.Key, f.Reason)
	}
	for _, m := range models {
		col, err := st.store.Open(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := col.Count(ctx); err != nil || n != 300 {
			t.Fatalf("%s holds %d rows (%v), want exactly 300", m, n, err)
		}
	}

	// Query with resized, re-encoded copies.
	s := st.searcher(t)
	misses := 0
	for i := 0; i < 300; i += 15 {
		hits, err := s.ByImage(ctx, st.models[1].Spec().Name, encode(t, testimages.Scale(originals[i], 0.8), 75), 3)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("s3://%s/imgs/%03d.jpg", st.minio.Bucket, i)
		if len(hits) == 0 || hits[0].URI != want {
			misses++
			t.Errorf("copy of %s: top hits %+v", want, hits)
		}
	}
	t.Logf("query: %d of 20 copies found their original first", 20-misses)
}

// TestDecoderOptions indexes a JPEG stored sideways (EXIF orientation 6)
// with a worker that keeps pixels as stored: a query decoded the same way
// finds it at cosine 1, one turned upright (the default) does not.
func TestDecoderOptions(t *testing.T) {
	st := newStack(t)
	st.decOpts = []imageprep.DecoderOption{imageprep.WithoutEXIFOrientation()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sideways, err := os.ReadFile(filepath.Join(root, "shared", "imageprep", "testdata", "images", "exif6_400x300.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	st.put(t, "imgs/sideways.jpg", sideways)
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	src, err := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: []string{"dinov2-base"}, JobSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil); err != nil || sum.Stored != 1 {
		t.Fatalf("run: %+v, %v", sum, err)
	}
	top := func(s *search.Searcher) float64 {
		hits, err := s.ByImage(ctx, st.models[1].Spec().Name, sideways, 1)
		if err != nil || len(hits) != 1 {
			t.Fatalf("query: %+v, %v", hits, err)
		}
		return hits[0].Cosine
	}
	asStored := top(st.searcher(t, imageprep.WithoutEXIFOrientation()))
	upright := top(st.searcher(t))
	t.Logf("cosine: query decoded as the worker decoded %.6f, turned upright %.6f", asStored, upright)
	if asStored < 0.99999 || upright > 0.9999 {
		t.Fatalf("cosine %.6f with the worker's decoding (want 1), %.6f turned upright (want less)", asStored, upright)
	}
}

// TestMilvusOutage stops Milvus in the middle of a run and starts it again
// (same data) 20 s later: the jobs that met the outage are handed
// back and retried, and the run completes with exactly one row per image.
func TestMilvusOutage(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st.putPhotos(t, rand.New(rand.NewPCG(9, 9)), 120, 96, 216)
	src, err := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	models := []string{"clip-vit-b32", "dinov2-base"}
	wctx, stopWorkers := context.WithCancel(ctx)
	// A call timeout shorter than the outage, so that jobs fail and are
	// handed back. A Milvus server takes tens of seconds to come back and
	// its first writes after that a few seconds each: 2 s would fail them
	// too, where a worker's default (60 s) would not.
	callTimeout := 2 * time.Second
	if st.milvus.Backend == testenv.BackendServer {
		callTimeout = 10 * time.Second
	}
	workerStore, err := vecstore.Connect(ctx, vecstore.Config{Address: st.milvus.Addr, CallTimeout: callTimeout})
	if err != nil {
		t.Fatal(err)
	}
	st.store = workerStore
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Let some jobs through, then take Milvus away for 20 s: longer than
	// the workers' 2 s call timeout, so jobs fail and are handed back.
	results, _ := st.nats.JS.Stream(ctx, st.topo.ResultsStream())
	for {
		info, _ := results.Info(ctx)
		if info.State.Msgs >= 3 {
			if info.State.Msgs >= uint64(rec.Jobs) {
				t.Fatal("the run finished before the outage; the test proves nothing")
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.milvus.Stop()
	time.Sleep(20 * time.Second)
	st.milvus.Restart(t)

	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil)
	if err != nil || !sum.Complete || sum.Stored != 120 || len(sum.Failed) != 0 || sum.Dead != 0 {
		t.Fatalf("after the outage: %+v (%v)", sum, err)
	}
	info, _ := results.Info(ctx)
	retried := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := results.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if r, err := jobs.Decode[jobs.Result](m.Data); err == nil && r.Attempts > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Fatal("no job needed a second attempt: the outage did not hit the run, the test proves nothing")
	}
	t.Logf("%d jobs were retried after the outage", retried)
	for _, m := range models {
		col, err := st.store.Open(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		// A restarted server may still be loading the collection again
		// (ErrUnavailable): wait for it, as any reader would.
		n, err := col.Count(ctx)
		for errors.Is(err, vecstore.ErrUnavailable) && ctx.Err() == nil {
			time.Sleep(time.Second)
			n, err = col.Count(ctx)
		}
		if err != nil || n != 120 {
			t.Fatalf("%s holds %d rows (%v), want exactly 120", m, n, err)
		}
	}
}

// recorder wraps a model and records the batch sizes it is given.
type recorder struct {
	engine.ImageEncoder
	mu    sync.Mutex
	sizes []int
}

func (r *recorder) Embed(px []float32, n int, out []float32) error {
	r.mu.Lock()
	r.sizes = append(r.sizes, n)
	r.mu.Unlock()
	return r.ImageEncoder.Embed(px, n, out)
}

// TestBatchesSpanJobs: with jobs of 3 items and batches of 8, the model
// sees batches larger than a job, so small jobs still fill the engine.
func TestBatchesSpanJobs(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(4, 4))
	for i := range 48 {
		st.put(t, fmt.Sprintf("imgs/%03d.jpg", i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	cons, err := st.topo.WorkerConsumer(ctx, st.nats.JS, bus.ConsumerOptions{AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{ImageEncoder: st.models[0]}
	w, err := worker.New(ctx, worker.Config{JS: st.nats.JS, Topology: st.topo, Consumer: cons, Models: []engine.ImageEncoder{rec},
		Store: st.store, OpenSource: func(uri string) (objstore.Source, error) { return objstore.Open(uri, st.s3, objstore.Filter{}) },
		BatchSize: 8, Prefetch: 6, Linger: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	run, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: []string{"clip-vit-b32"}, JobSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, run, nil)
	stop()
	<-done
	if err != nil || sum.Stored != 48 {
		t.Fatalf("run: %+v (%v)", sum, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	biggest, total := 0, 0
	for _, n := range rec.sizes {
		biggest = max(biggest, n)
		total += n
	}
	if total != 48 || biggest <= 3 {
		t.Fatalf("batch sizes %v: want batches beyond one 3-item job, 48 images in all", rec.sizes)
	}
	t.Logf("batch sizes: %v", rec.sizes)
}

func (st *stack) incremental(t *testing.T, ctx context.Context, models []string, versions map[string]string) jobs.Run {
	t.Helper()
	src, err := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := coordinator.RunIncremental(ctx, coordinator.IncrementalConfig{
		Config: coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 8, Versions: versions},
		Store:  st.store})
	if err != nil {
		t.Fatalf("incremental run: %v", err)
	}
	defer inc.Close()
	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, inc.Run, nil)
	if err != nil || !sum.Complete || len(sum.Failed) != 0 {
		t.Fatalf("wait: %+v (%v)", sum, err)
	}
	if err := inc.Finish(ctx, sum); err != nil {
		t.Fatal(err)
	}
	return inc.Run
}

func (st *stack) count(t *testing.T, ctx context.Context, model string) int64 {
	t.Helper()
	col, err := st.store.Open(ctx, model)
	if err != nil {
		t.Fatal(err)
	}
	n, err := col.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIncrementalReindex: run 1 indexes 200 images; then 20 are added, 10
// rewritten and 15 deleted; run 2 embeds exactly 30 and deletes 15 (the
// rewritten images' vectors change); run 3 embeds and deletes nothing.
func TestIncrementalReindex(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(7, 7))
	key := func(i int) string { return fmt.Sprintf("imgs/%03d.jpg", i) }
	for i := range 200 {
		st.put(t, key(i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	models := []string{"clip-vit-b32", "dinov2-base"}

	run1 := st.incremental(t, ctx, models, nil)
	if d := run1.Diff["dinov2-base"]; d.New != 200 || run1.Listed != 200 {
		t.Fatalf("run 1: %+v listed %d", run1.Diff, run1.Listed)
	}
	for _, m := range models {
		if n := st.count(t, ctx, m); n != 200 {
			t.Fatalf("after run 1, %s holds %d rows", m, n)
		}
	}
	uri := func(i int) string { return "s3://" + st.minio.Bucket + "/" + key(i) }
	dino, _ := st.store.Open(ctx, "dinov2-base")
	before, _, err := dino.Get(ctx, vecstore.ID(uri(5)))
	if err != nil {
		t.Fatal(err)
	}

	for i := 200; i < 220; i++ { // 20 added
		st.put(t, key(i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	for i := 0; i < 10; i++ { // 10 rewritten with new content
		st.put(t, key(i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	for i := 100; i < 115; i++ { // 15 deleted
		if err := st.minio.Client.RemoveObject(ctx, st.minio.Bucket, key(i), minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	run2 := st.incremental(t, ctx, models, nil)
	for _, m := range models {
		want := jobs.DiffCounts{New: 20, Changed: 10, Unchanged: 175, Deleted: 15}
		if d := run2.Diff[m]; d != want {
			t.Fatalf("run 2, %s: diff %+v, want %+v", m, d, want)
		}
		if n := st.count(t, ctx, m); n != 205 {
			t.Fatalf("after run 2, %s holds %d rows, want 205", m, n)
		}
	}
	if run2.Listed != 30 {
		t.Fatalf("run 2 embedded %d objects, want exactly 30", run2.Listed)
	}
	after, found, err := dino.Get(ctx, vecstore.ID(uri(5)))
	if err != nil || !found {
		t.Fatal(err)
	}
	if c := embed.Cosine(before.Vector, after.Vector); c > 0.99999 {
		t.Fatalf("the rewritten image's vector did not change (cosine %v)", c)
	}
	if _, found, _ := dino.Get(ctx, vecstore.ID(uri(107))); found {
		t.Fatal("a deleted object still has a row")
	}

	run3 := st.incremental(t, ctx, models, nil)
	if run3.Listed != 0 || run3.Jobs != 0 || run3.Diff["clip-vit-b32"].Deleted != 0 || run3.Diff["clip-vit-b32"].Unchanged != 205 {
		t.Fatalf("run 3: listed %d jobs %d diff %+v; want nothing to do", run3.Listed, run3.Jobs, run3.Diff)
	}
}

// TestIncrementalModelUpgrade: a new version of one model re-embeds every
// image for that model only; the other model's collection is left alone.
func TestIncrementalModelUpgrade(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(8, 8))
	for i := range 40 {
		st.put(t, fmt.Sprintf("imgs/%03d.jpg", i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	models := []string{"clip-vit-b32", "dinov2-base"}
	versions := map[string]string{}
	for _, m := range st.models {
		versions[m.Spec().Name] = m.Spec().Version
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	st.incremental(t, ctx, models, versions)
	stopWorkers()
	wg.Wait()

	// CLIP v2: the same network with another doc string, so another sha256.
	root, _ := testenv.RepoRoot()
	dir := t.TempDir()
	onnx, err := os.ReadFile(filepath.Join(root, "shared", "embed", "testdata", "models", "clip-vit-b32", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	onnx = append(onnx, 0x32, 0x02, 'v', '2') // ModelProto.doc_string = "v2"
	spec, _ := os.ReadFile(filepath.Join(root, "shared", "embed", "testdata", "models", "clip-vit-b32", "spec.json"))
	os.WriteFile(filepath.Join(dir, "model.onnx"), onnx, 0o644)
	os.WriteFile(filepath.Join(dir, "spec.json"), []byte(strings.Replace(string(spec), `"version": "`+versions["clip-vit-b32"]+`"`, `"version": ""`, 1)), 0o644)
	clip2, err := embed.Open(dir, embed.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer clip2.Close()
	if clip2.Spec().Version == versions["clip-vit-b32"] {
		t.Fatal("the new model has the old version")
	}
	oldVersion := versions["clip-vit-b32"]
	versions["clip-vit-b32"] = clip2.Spec().Version
	st.models[0] = clip2

	src, _ := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	inc, err := coordinator.RunIncremental(ctx, coordinator.IncrementalConfig{
		Config: coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 8, Versions: versions},
		Store:  st.store})
	if err != nil {
		t.Fatal(err)
	}
	defer inc.Close()
	d := inc.Run.Diff
	if c := d["clip-vit-b32"]; !c.Upgraded || c.New != 40 {
		t.Fatalf("clip diff %+v: want upgraded, 40 to re-embed", c)
	}
	if c := d["dinov2-base"]; c.Upgraded || c.New != 0 || c.Changed != 0 || c.Unchanged != 40 {
		t.Fatalf("dinov2 diff %+v: want 40 unchanged", c)
	}
	wctx, stopWorkers = context.WithCancel(ctx)
	wg = st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, inc.Run, nil)
	if err != nil || !sum.Complete || sum.Stored != 40 {
		t.Fatalf("upgrade run: %+v (%v)", sum, err)
	}
	if err := inc.Finish(ctx, sum); err != nil {
		t.Fatal(err)
	}
	inc.Close() // releases the lease
	// The new version filled a collection of its own; the old one still
	// answers, whole, until the new one is activated.
	col, err := st.store.Open(ctx, "clip-vit-b32")
	if err != nil || col.Version != oldVersion || col.Name != "clip_vit_b32" {
		t.Fatalf("active clip collection %+v (%v), want the old version's", col, err)
	}
	newCol, err := st.store.OpenVersion(ctx, "clip-vit-b32", versions["clip-vit-b32"])
	if err != nil || newCol.Name != vecstore.VersionedName("clip-vit-b32", versions["clip-vit-b32"]) {
		t.Fatalf("new version's collection %+v (%v)", newCol, err)
	}
	for _, c := range []*vecstore.Collection{col, newCol} {
		if n, err := c.Count(ctx); err != nil || n != 40 {
			t.Fatalf("%s holds %d rows (%v), want 40", c.Name, n, err)
		}
	}
	if _, err := st.store.Activate(ctx, "clip-vit-b32", newCol); err != nil {
		t.Fatal(err)
	}
	if col, err := st.store.Open(ctx, "clip-vit-b32"); err != nil || col.Name != newCol.Name {
		t.Fatalf("after activation Open gives %+v (%v)", col, err)
	}
	for _, m := range models {
		if n := st.count(t, ctx, m); n != 40 {
			t.Fatalf("%s holds %d rows, want 40", m, n)
		}
	}
	// A further run has nothing to do for either model.
	run3 := st.incremental(t, ctx, models, versions)
	if run3.Listed != 0 {
		t.Fatalf("after the upgrade: %d to embed, want 0 (%+v)", run3.Listed, run3.Diff)
	}
}

// TestLostJobsRecovered: jobs vanish from the stream behind the
// coordinator's back (as a NATS crash that loses acknowledged messages
// would do); waiting for the run notices them, publishes them again from its
// journal, and the run completes with every image stored.
func TestLostJobsRecovered(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(6, 6))
	for i := range 64 {
		st.put(t, fmt.Sprintf("imgs/%03d.jpg", i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	journal, err := coordinator.NewJournal()
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	src, _ := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src,
		Models: []string{"clip-vit-b32", "dinov2-base"}, JobSize: 8, Journal: journal})
	if err != nil {
		t.Fatal(err)
	}
	stream, _ := st.nats.JS.Stream(ctx, st.topo.JobsStream())
	for _, seq := range []uint64{2, 5, 6} {
		if err := stream.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	sum, err := coordinator.New(st.nats.JS, st.topo).WaitWith(ctx, rec, coordinator.WaitOptions{Journal: journal, LostAfter: 2 * time.Second})
	if err != nil || !sum.Complete || sum.Stored != 64 || len(sum.Failed) != 0 {
		t.Fatalf("after losing 3 jobs: %+v (%v)", sum, err)
	}
	for _, m := range []string{"clip-vit-b32", "dinov2-base"} {
		if n := st.count(t, ctx, m); n != 64 {
			t.Fatalf("%s holds %d rows, want 64", m, n)
		}
	}

	// Without a journal the lost jobs cannot be re-formed: they are reported
	// as failed, item by item or job by job, never silently dropped.
	stopWorkers()
	wg.Wait()
	rec2, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src,
		Models: []string{"clip-vit-b32"}, JobSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := stream.Info(ctx)
	if err := stream.DeleteMsg(ctx, info.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	wctx, stopWorkers = context.WithCancel(ctx)
	defer stopWorkers()
	wg = st.startWorkers(t, wctx, 1)
	sum, err = coordinator.New(st.nats.JS, st.topo).WaitWith(ctx, rec2, coordinator.WaitOptions{LostAfter: 2 * time.Second})
	if err != nil || !sum.Complete || sum.Stored != 32 || len(sum.Failed) != 1 || !strings.Contains(sum.Failed[0].Reason, "lost") {
		t.Fatalf("a lost job without a journal: %+v (%v)", sum, err)
	}
}

// TestVerifyAndRepair indexes 30 images, then damages the index behind
// embedfleet's back (rows deleted, an object rewritten, an object removed):
// Verify reports exactly that, a repair run and deletes fix it, and Verify is
// clean again.
func TestVerifyAndRepair(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 30 {
		st.put(t, fmt.Sprintf("imgs/%03d.jpg", i), encode(t, testimages.Photo(r, 96, 160), 90))
	}
	models := []string{"clip-vit-b32", "dinov2-base"}
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	src, _ := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil); err != nil || sum.Stored != 30 {
		t.Fatalf("index: %+v %v", sum, err)
	}
	cfg := coordinator.VerifyConfig{Source: src, Models: models, Store: st.store}
	if rep, err := coordinator.Verify(ctx, cfg); err != nil || !rep.Clean() {
		t.Fatalf("verify after indexing: %+v %v", rep, err)
	}

	uri := func(i int) string { return fmt.Sprintf("s3://%s/imgs/%03d.jpg", st.minio.Bucket, i) }
	clip, _ := st.store.Open(ctx, "clip-vit-b32")
	if err := clip.Delete(ctx, []string{vecstore.ID(uri(3)), vecstore.ID(uri(4))}); err != nil { // lost rows
		t.Fatal(err)
	}
	st.put(t, "imgs/007.jpg", encode(t, testimages.Photo(r, 96, 160), 90))                                                  // rewritten
	if err := st.minio.Client.RemoveObject(ctx, st.minio.Bucket, "imgs/020.jpg", minio.RemoveObjectOptions{}); err != nil { // deleted
		t.Fatal(err)
	}
	rep, err := coordinator.Verify(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]coordinator.ModelReport{
		"clip-vit-b32": {Model: "clip-vit-b32", Listed: 29, OK: 26, Missing: 2, Stale: 1, Extra: 1},
		"dinov2-base":  {Model: "dinov2-base", Listed: 29, OK: 28, Missing: 0, Stale: 1, Extra: 1},
	}
	for _, m := range rep.Models {
		w := want[m.Model]
		if m.Listed != w.Listed || m.OK != w.OK || m.Missing != w.Missing || m.Stale != w.Stale || m.Extra != w.Extra {
			t.Fatalf("verify %s: %+v, want %+v", m.Model, m, w)
		}
	}
	if len(rep.ToEmbed) != 3 {
		t.Fatalf("to re-embed: %+v, want 3 objects", rep.ToEmbed)
	}

	// Repair: embed what is missing or stale, delete what is extra.
	rec, err = coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: coordinator.Only(src, rep.ToEmbed), Models: models, JobSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil); err != nil || sum.Stored != 3 {
		t.Fatalf("repair run: %+v %v", sum, err)
	}
	for m, uris := range rep.ExtraURIs {
		if err := st.store.DeleteObjects(ctx, m, uris); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := coordinator.Verify(ctx, cfg); err != nil || !rep.Clean() {
		t.Fatalf("verify after the repair: %+v %v", rep.Models, err)
	}
}

// TestBackgroundSetAndContentHash: a run whose targets name a model's
// background set fills that set's own collection, beside the model's, with
// the same workers; every row carries the sha256 of its object's bytes.
func TestBackgroundSetAndContentHash(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(5, 6))
	var first []byte
	for i := range 12 {
		b := encode(t, testimages.Photo(r, 64, 96), 90)
		if i == 0 {
			first = b
		}
		st.put(t, fmt.Sprintf("main/%02d.jpg", i), b)
	}
	st.put(t, "main/same-bytes.jpg", first)
	for i := range 7 {
		st.put(t, fmt.Sprintf("bg/%02d.jpg", i), encode(t, testimages.Photo(r, 64, 96), 85))
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()

	model := st.models[0].Spec().Name
	bgTarget := vecstore.Target(model, vecstore.SetBackground)
	coord := coordinator.New(st.nats.JS, st.topo)
	for _, c := range []struct {
		prefix string
		target string
		want   int64
	}{{"main/", model, 13}, {"bg/", bgTarget, 7}} {
		src, err := objstore.Open("s3://"+st.minio.Bucket+"/"+c.prefix, st.s3, objstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := coord.Run(ctx, coordinator.Config{Source: src, Models: []string{c.target}, JobSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		sum, err := coord.Wait(ctx, rec, nil)
		if err != nil || !sum.Complete || sum.Stored != c.want {
			t.Fatalf("%s into %s: %+v %v", c.prefix, c.target, sum, err)
		}
		col, err := st.store.Open(ctx, c.target)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.count(t, ctx, c.target); n != c.want {
			t.Fatalf("%s (%s) holds %d rows, want %d", c.target, col.Name, n, c.want)
		}
	}
	col, err := st.store.Open(ctx, model)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := col.GetMany(ctx, []string{
		vecstore.ID("s3://" + st.minio.Bucket + "/main/00.jpg"),
		vecstore.ID("s3://" + st.minio.Bucket + "/main/same-bytes.jpg"),
		vecstore.ID("s3://" + st.minio.Bucket + "/main/01.jpg"),
	})
	if err != nil || len(rows) != 3 {
		t.Fatalf("get: %d rows %v", len(rows), err)
	}
	sum := sha256.Sum256(first)
	want := hex.EncodeToString(sum[:])
	a, b, c := rows[vecstore.ID("s3://"+st.minio.Bucket+"/main/00.jpg")], rows[vecstore.ID("s3://"+st.minio.Bucket+"/main/same-bytes.jpg")], rows[vecstore.ID("s3://"+st.minio.Bucket+"/main/01.jpg")]
	if a.SHA256 != want || b.SHA256 != want || c.SHA256 == want || len(c.SHA256) != 64 {
		t.Fatalf("content hashes: %q %q %q, want the first two %q", a.SHA256, b.SHA256, c.SHA256, want)
	}
}

// slowSource lists like its Source but stalls for a while after the first
// few objects, as listing a large bucket takes long.
type slowSource struct {
	objstore.Source
	after int
	stall time.Duration
}

func (s slowSource) List(ctx context.Context, after string, fn func(objstore.Object) error) error {
	n := 0
	return s.Source.List(ctx, after, func(o objstore.Object) error {
		if n++; n == s.after {
			time.Sleep(s.stall)
		}
		return fn(o)
	})
}

// TestIncrementalSlowListing: an incremental run whose listing takes longer
// than the JetStream client's default timeout (5 s) still reads the whole
// previous manifest (the soak found it cut off at 5 s: "manifest:
// truncated: nats: timeout").
func TestIncrementalSlowListing(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Enough objects, with random names, that the previous manifest is
	// more than its reader buffers at once (64 KiB of gzip).
	r := rand.New(rand.NewPCG(8, 8))
	var wg0 sync.WaitGroup
	names := make(chan string)
	for range 8 {
		wg0.Add(1)
		go func() {
			defer wg0.Done()
			for k := range names {
				st.put(t, k, encode(t, testimages.Photo(rand.New(rand.NewPCG(uint64(len(k)), uint64(k[6]))), 16, 24), 80))
			}
		}()
	}
	for i := range 2000 {
		names <- fmt.Sprintf("imgs/%04d-%016x%016x.jpg", i, r.Uint64(), r.Uint64())
	}
	close(names)
	wg0.Wait()
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	models := []string{"dinov2-base"}
	st.incremental(t, ctx, models, nil)
	st.put(t, "imgs/new.jpg", encode(t, testimages.Photo(r, 48, 64), 85))

	src, err := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	// A context without a deadline, as the command's is without --timeout:
	// then the client's default timeout applies to object-store reads.
	inc, err := coordinator.RunIncremental(context.Background(), coordinator.IncrementalConfig{
		Config: coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: slowSource{Source: src, after: 3, stall: 6 * time.Second},
			Models: models, JobSize: 8},
		Store: st.store})
	if err != nil {
		t.Fatalf("incremental run over a slow listing: %v", err)
	}
	defer inc.Close()
	if d := inc.Run.Diff["dinov2-base"]; d.New != 1 || d.Unchanged != 2000 || d.Deleted != 0 {
		t.Fatalf("diff %+v, want 1 new and 2000 unchanged", d)
	}
}

// TestCollectionDroppedMidRun: a collection dropped while workers write it
// (a version retired before its workers stop) costs the jobs in hand a
// retry, not a dead letter: the worker hands them back, ensures the
// collection again, and the run completes with nothing failed.
func TestCollectionDroppedMidRun(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st.putPhotos(t, rand.New(rand.NewPCG(17, 17)), 96, 96, 160)
	src, err := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	models := []string{"clip-vit-b32", "dinov2-base"}
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	results, _ := st.nats.JS.Stream(ctx, st.topo.ResultsStream())
	for {
		info, _ := results.Info(ctx)
		if info.State.Msgs >= 2 {
			if info.State.Msgs >= uint64(rec.Jobs)-2 {
				t.Fatal("the run finished before the drop; the test proves nothing")
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := st.store.Drop(ctx, "clip-vit-b32"); err != nil {
		t.Fatal(err)
	}
	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil)
	if err != nil || !sum.Complete || sum.Dead != 0 || len(sum.Failed) != 0 || sum.Stored != 96 {
		first := ""
		if len(sum.Failed) > 0 {
			first = sum.Failed[0].Reason
		}
		t.Fatalf("after the collection was dropped mid-run: complete=%v stored=%d failed=%d dead=%d (%v; first failure %q); want complete, all 96 stored, nothing dead or failed",
			sum.Complete, sum.Stored, len(sum.Failed), sum.Dead, err, first)
	}
	col, err := st.store.Open(ctx, "clip-vit-b32")
	if err != nil {
		t.Fatalf("the dropped collection was not made again: %v", err)
	}
	if n, err := col.Count(ctx); err != nil || n == 0 || n >= 96 {
		// Rows written before the drop went with it; the rest are back.
		t.Fatalf("the collection made again holds %d rows (%v): want some, and fewer than 96", n, err)
	}
}

// TestVerifyUnscanned: when the scan over the prefix returns fewer rows of
// listed objects than the lookups by id found (here a row whose id is a
// listed object's but whose stored URI is elsewhere, so the iterator over
// the prefix never returns it), verify says the scan stopped short and the
// report is not clean, rather than trusting a partial scan.
func TestVerifyUnscanned(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st.putPhotos(t, rand.New(rand.NewPCG(8, 8)), 6, 96, 160)
	wctx, stopWorkers := context.WithCancel(ctx)
	wg := st.startWorkers(t, wctx, 1)
	defer func() { stopWorkers(); wg.Wait() }()
	src, _ := objstore.Open("s3://"+st.minio.Bucket+"/imgs/", st.s3, objstore.Filter{})
	models := []string{"clip-vit-b32"}
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: src, Models: models, JobSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil); err != nil || sum.Stored != 6 {
		t.Fatalf("index: %+v %v", sum, err)
	}
	clip, err := st.store.Open(ctx, "clip-vit-b32")
	if err != nil {
		t.Fatal(err)
	}
	row, _, err := clip.Get(ctx, vecstore.ID(fmt.Sprintf("s3://%s/imgs/002.jpg", st.minio.Bucket)))
	if err != nil {
		t.Fatal(err)
	}
	moved := row
	moved.URI = "s3://elsewhere/002.jpg" // same id, a URI outside the prefix
	other := row
	other.ID, other.URI = vecstore.ID("s3://elsewhere/other.jpg"), "s3://elsewhere/other.jpg"
	if err := clip.Upsert(ctx, []vecstore.Row{moved, other}); err != nil {
		t.Fatal(err)
	}
	rep, err := coordinator.Verify(ctx, coordinator.VerifyConfig{Source: src, Models: models, Store: st.store})
	if err != nil {
		t.Fatal(err)
	}
	if m := rep.Models[0]; m.Unscanned != 1 || rep.Clean() {
		t.Fatalf("verify with a row the scan cannot see: %+v clean=%v, want unscanned=1 and not clean", m, rep.Clean())
	}
}
