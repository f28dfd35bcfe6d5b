package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
	"github.com/embedfleet/embedfleet/worker"
)

// paced is a model that takes a fixed time per batch, as an accelerator
// does: it runs the tiny CLIP export (real vectors) and then waits out the
// rest of the batch's time.
type paced struct {
	engine.ImageEncoder
	perBatch time.Duration
}

func (p paced) Embed(px []float32, n int, out []float32) error {
	start := time.Now()
	err := p.ImageEncoder.Embed(px, n, out)
	time.Sleep(p.perBatch - time.Since(start))
	return err
}

// BenchmarkWorkerPaced runs a worker (in this process) whose model takes
// BENCH_MODEL_MS (default 80) per batch of BENCH_BATCH (default 32), a
// GPU-like engine that the CPU side can outrun, on BENCH_IMAGES (default
// 1000) objects cycling through the BSDS500 photos, with real MinIO, NATS
// JetStream and milvus-lite. It prints
//
//	worker_paced model_img_s=M e2e_img_s=X busy=X/M batch=B images=N
//
// busy is the share of the time the engine was given work: what the rest of
// the pipeline (fetch, decode, preprocess, upsert, ack) costs it.
// BENCH_MILVUS_DELAY_MS (default 0) delays every packet between the worker
// and milvus-lite by that much each way, as a Milvus cluster across the
// network would: milvus_rtt_ms in the output.
func BenchmarkWorkerPaced(b *testing.B) {
	root, _ := testenv.RepoRoot()
	dir := os.Getenv("BENCHDIR")
	if dir == "" {
		dir = filepath.Join(root, "..", "shared", "bench", "bsds500")
	}
	n, batch := envInt("BENCH_IMAGES", 1000), envInt("BENCH_BATCH", 32)
	perBatch := time.Duration(envInt("BENCH_MODEL_MS", 80)) * time.Millisecond
	names, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
	if len(names) == 0 {
		b.Fatalf("no photos in %s", dir)
	}
	if _, err := embed.Init(testenv.Binary(b, testenv.EnvORTLib)); err != nil {
		b.Fatal(err)
	}
	tiny, err := embed.Open(filepath.Join(root, "shared", "embed", "testdata", "models", "clip-vit-b32"), embed.Options{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer tiny.Close()
	m, ns, mv := testenv.StartMinIO(b), testenv.StartNATS(b), testenv.StartMilvus(b)
	ctx := context.Background()
	for i := range n {
		data, err := os.ReadFile(names[i%len(names)])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Client.PutObject(ctx, m.Bucket, fmt.Sprintf("bsds/%04d.jpg", i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	topo := bus.Topology{Prefix: "PACED"}
	if err := topo.Ensure(ctx, ns.JS, bus.StreamOptions{}); err != nil {
		b.Fatal(err)
	}
	delay := time.Duration(envInt("BENCH_MILVUS_DELAY_MS", 0)) * time.Millisecond
	milvusAddr := mv.Addr
	if delay > 0 {
		milvusAddr = delayProxy(b, mv.Addr, delay)
	}
	store, err := vecstore.Connect(ctx, vecstore.Config{Address: milvusAddr})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close(ctx)
	s3 := objstore.S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true, PathStyle: true}
	cons, err := topo.WorkerConsumer(ctx, ns.JS, bus.ConsumerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	w, err := worker.New(ctx, worker.Config{JS: ns.JS, Topology: topo, Consumer: cons, Models: []engine.ImageEncoder{paced{tiny, perBatch}},
		Store: store, OpenSource: func(uri string) (objstore.Source, error) { return objstore.Open(uri, s3, objstore.Filter{}) },
		BatchSize: batch})
	if err != nil {
		b.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	defer func() { stop(); <-done }()
	src, _ := objstore.Open("s3://"+m.Bucket+"/bsds/", s3, objstore.Filter{})
	start := time.Now()
	run, err := coordinator.Run(ctx, coordinator.Config{JS: ns.JS, Topology: topo, Source: src, Models: []string{"clip-vit-b32"}, JobSize: 2 * batch})
	if err != nil {
		b.Fatal(err)
	}
	sum, err := coordinator.New(ns.JS, topo).Wait(ctx, run, nil)
	el := time.Since(start)
	if err != nil || sum.Stored != int64(n) {
		b.Fatalf("run: %+v (%v)", sum, err)
	}
	model := float64(batch) / perBatch.Seconds()
	e2e := float64(n) / el.Seconds()
	fmt.Printf("worker_paced model_img_s=%.0f e2e_img_s=%.1f busy=%.2f batch=%d images=%d milvus_rtt_ms=%d\n",
		model, e2e, e2e/model, batch, n, 2*delay.Milliseconds())
}

// delayProxy forwards TCP connections to addr, holding every chunk for d
// before passing it on (in order), and returns its own address.
func delayProxy(b *testing.B, addr string, d time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	pipe := func(dst, src net.Conn) {
		type chunk struct {
			at   time.Time
			data []byte
		}
		q := make(chan chunk, 1024)
		go func() {
			for c := range q {
				time.Sleep(time.Until(c.at))
				if _, err := dst.Write(c.data); err != nil {
					break
				}
			}
			dst.Close()
		}()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(d), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				close(q)
				return
			}
		}
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return l.Addr().String()
}
