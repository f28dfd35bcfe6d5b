// Package pipeline holds the pipeline benchmarks that `make bench-pipeline`
// runs. They start real servers (MinIO, nats-server, milvus-lite) through
// shared/testenv and print one line each:
//
//	coordinator objects_s=X listing_objects_s=Y peak_rss_mb=Z objects=N
//	worker MODELS e2e_img_s=X inference_img_s=Y batch=B
//	milvus upsert_vectors_s=X dim=D
//
// Run: go test -run '^$' -bench . -benchtime 1x ./deploy/bench/pipeline
package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func binary(b *testing.B) string {
	root, err := testenv.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "embedfleet")
	if _, err := os.Stat(bin); err != nil {
		b.Fatalf("%s: %v (run `make build`)", bin, err)
	}
	return bin
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// BenchmarkCoordinator publishes a listing of N objects (BENCH_OBJECTS,
// default 100000) from MinIO as jobs, in a separate `embedfleet coordinator
// run` process whose peak RSS is read from the kernel, and compares its rate
// with minio-go's raw listing of the same bucket.
func BenchmarkCoordinator(b *testing.B) {
	n := envInt("BENCH_OBJECTS", 100000)
	m := testenv.StartMinIO(b)
	ns := testenv.StartNATSProcess(b)
	ctx := context.Background()
	var wg sync.WaitGroup
	keys := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				key := fmt.Sprintf("objs/%08d.jpg", i)
				if _, err := m.Client.PutObject(ctx, m.Bucket, key, bytes.NewReader([]byte{1}), 1, minio.PutObjectOptions{}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := range n {
		keys <- i
	}
	close(keys)
	wg.Wait()

	start := time.Now()
	listed := 0
	for o := range m.Client.ListObjects(ctx, m.Bucket, minio.ListObjectsOptions{Prefix: "objs/", Recursive: true}) {
		if o.Err != nil {
			b.Fatal(o.Err)
		}
		listed++
	}
	listRate := float64(listed) / time.Since(start).Seconds()

	cmd := exec.Command(binary(b), "coordinator", "run", "--source", "s3://"+m.Bucket+"/objs/", "--models", "clip-vit-b32",
		"--nats-url", ns.URL, "--s3-endpoint", m.Endpoint, "--s3-insecure", "--s3-path-style", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start = time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	peak := stack.WatchPeakRSS(cmd.Process.Pid) // not ru_maxrss: it carries this process's size into the child
	err := cmd.Wait()
	rss := peak() / 1024
	el := time.Since(start)
	if err != nil || !strings.Contains(out.String(), fmt.Sprintf("%d objects in", n)) {
		b.Fatalf("coordinator: %v\n%s", err, out.String())
	}
	fmt.Printf("coordinator objects_s=%.0f listing_objects_s=%.0f peak_rss_mb=%d objects=%d\n",
		float64(n)/el.Seconds(), listRate, rss, n)
}

// BenchmarkMilvusUpsert upserts batches of 256 random 512-d vectors into a
// milvus-lite collection for BENCH_SECONDS (default 10).
func BenchmarkMilvusUpsert(b *testing.B) {
	mv := testenv.StartMilvus(b)
	ctx := context.Background()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		b.Fatal(err)
	}
	spec, _ := embed.Builtin("clip-vit-b32")
	spec.Version = "sha256:bench"
	col, err := st.Ensure(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	secs := envInt("BENCH_SECONDS", 10)
	n, start := 0, time.Now()
	for time.Since(start) < time.Duration(secs)*time.Second {
		rows := make([]vecstore.Row, 256)
		for i := range rows {
			v := make([]float32, spec.Dim)
			for j := range v {
				v[j] = r.Float32() - 0.5
			}
			embed.Normalize(v)
			uri := fmt.Sprintf("s3://bench/%09d.jpg", n+i)
			rows[i] = vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Size: 1, Width: 1, Height: 1, Vector: v}
		}
		if err := col.Upsert(ctx, rows); err != nil {
			b.Fatal(err)
		}
		n += len(rows)
	}
	fmt.Printf("milvus upsert_vectors_s=%.0f dim=%d\n", float64(n)/time.Since(start).Seconds(), spec.Dim)
}

// BenchmarkWorker runs one worker (in this process) over BENCH_IMAGES
// (default 200) photos of BENCHDIR (default ../shared/bench/bsds500) in
// MinIO with the full-size random-init models of BENCH_MODELS_DIR (`make
// random-models`), and compares its end-to-end rate with ONNX Runtime alone
// on preprocessed tensors at the same batch size.
func BenchmarkWorker(b *testing.B) {
	root, _ := testenv.RepoRoot()
	dir := os.Getenv("BENCHDIR")
	if dir == "" {
		dir = filepath.Join(root, "..", "shared", "bench", "bsds500")
	}
	modelsDir := testenv.RandomModelsDir()
	model := os.Getenv("BENCH_MODEL")
	if model == "" {
		model = "clip-vit-b32"
	}
	n, batch := envInt("BENCH_IMAGES", 200), envInt("BENCH_BATCH", 32)
	names, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
	if len(names) < n {
		b.Fatalf("%s has %d images, want %d", dir, len(names), n)
	}
	m := testenv.StartMinIO(b)
	ns := testenv.StartNATSProcess(b)
	mv := testenv.StartMilvus(b)
	ctx := context.Background()
	for i, p := range names[:n] {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Client.PutObject(ctx, m.Bucket, fmt.Sprintf("bsds/%04d.jpg", i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	env := append(os.Environ(), "AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey,
		"EMBEDFLEET_NATS_URL="+ns.URL, "EMBEDFLEET_MILVUS_ADDR="+mv.Addr, "EMBEDFLEET_S3_ENDPOINT="+m.Endpoint,
		"EMBEDFLEET_S3_INSECURE=true", "EMBEDFLEET_S3_PATH_STYLE=true", "EMBEDFLEET_MODELS_DIR="+modelsDir)
	w := exec.Command(binary(b), "worker", "--models", model, "--batch-size", strconv.Itoa(batch), "--log-level", "warn")
	w.Env = env
	w.Stderr = os.Stderr
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = w.Process.Signal(syscall.SIGTERM); _ = w.Wait() }()
	time.Sleep(3 * time.Second) // let the worker load its model before timing
	c := exec.Command(binary(b), "coordinator", "run", "--source", "s3://"+m.Bucket+"/bsds/", "--models", model, "--wait", "--job-size", strconv.Itoa(2*batch))
	c.Env = env
	start := time.Now()
	out, err := c.CombinedOutput()
	el := time.Since(start)
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("complete: %d listed, %d stored", n, n)) {
		b.Fatalf("coordinator: %v\n%s", err, out)
	}

	if _, err := embed.Init(testenv.Binary(b, testenv.EnvORTLib)); err != nil {
		b.Fatal(err)
	}
	em, err := embed.Open(filepath.Join(modelsDir, model), embed.Options{SkipHashCheck: true})
	if err != nil {
		b.Fatal(err)
	}
	defer em.Close()
	in := make([]float32, batch*em.InputSize())
	for i := range in {
		in[i] = float32(i%255)/128 - 1
	}
	outv := make([]float32, batch*em.Spec().Dim)
	_ = em.Embed(in, batch, outv)
	done, istart := 0, time.Now()
	for done < n {
		if err := em.Embed(in, batch, outv); err != nil {
			b.Fatal(err)
		}
		done += batch
	}
	infer := float64(done) / time.Since(istart).Seconds()
	fmt.Printf("worker %s e2e_img_s=%.1f inference_img_s=%.1f batch=%d images=%d\n", model, float64(n)/el.Seconds(), infer, batch, n)
}
