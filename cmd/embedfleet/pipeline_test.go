package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// cluster is a real MinIO, NATS JetStream (a nats-server process) and
// milvus-lite, with n images in a bucket, for tests that run the binary as
// separate worker processes.
type cluster struct {
	minio  *testenv.MinIO
	nats   *testenv.NATS
	milvus *testenv.Milvus
	prefix string
	source string
	n      int
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return newClusterOn(t, n, testenv.StartNATSProcess(t))
}

// newClusterOn is newCluster on a NATS the test started (a 3-node cluster).
func newClusterOn(t *testing.T, n int, nc *testenv.NATS) *cluster {
	t.Helper()
	c := &cluster{minio: testenv.StartMinIO(t), nats: nc, milvus: testenv.StartMilvus(t), n: n}
	c.prefix = strings.ToUpper(testenv.Name(t, "ef"))
	c.source = "s3://" + c.minio.Bucket + "/imgs/"
	r := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		data := testimages.JPEG(testimages.Photo(r, 200, 400), 90)
		if _, err := c.minio.Client.PutObject(context.Background(), c.minio.Bucket, fmt.Sprintf("imgs/%04d.jpg", i),
			bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *cluster) env(t *testing.T) []string {
	return append(ortEnv(t, tinyModels(t)),
		"EMBEDFLEET_NATS_URL="+c.nats.URL, "EMBEDFLEET_PREFIX="+c.prefix, "EMBEDFLEET_MILVUS_ADDR="+c.milvus.Addr,
		"EMBEDFLEET_S3_ENDPOINT="+c.minio.Endpoint, "EMBEDFLEET_S3_INSECURE=true", "EMBEDFLEET_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID="+c.minio.AccessKey, "AWS_SECRET_ACCESS_KEY="+c.minio.SecretKey)
}

// startWorker runs `embedfleet worker` as a process.
// syncBuffer is a bytes.Buffer that a process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (c *cluster) startWorker(t *testing.T, extra ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	args := append([]string{"worker", "--models", "clip-vit-b32,dinov2-base", "--batch-size", "4", "--ack-wait", "3s",
		"--log-level", "debug"}, extra...)
	cmd := execCommand(args...)
	cmd.Env = append(os.Environ(), c.env(t)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// publish runs the coordinator in this process and returns its run record.
func (c *cluster) publish(t *testing.T, ctx context.Context, jobSize int) (jetstream.JetStream, bus.Topology, coordinator.Summary) {
	t.Helper()
	topo := bus.Topology{Prefix: c.prefix}
	if err := topo.Ensure(ctx, c.nats.JS, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	src, err := objstore.Open(c.source, objstore.S3Config{Endpoint: c.minio.Endpoint, AccessKey: c.minio.AccessKey,
		SecretKey: c.minio.SecretKey, Insecure: true, PathStyle: true}, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: c.nats.JS, Topology: topo, Source: src,
		Models: []string{"clip-vit-b32", "dinov2-base"}, JobSize: jobSize})
	if err != nil {
		t.Fatal(err)
	}
	return c.nats.JS, topo, coordinator.Summary{Run: rec.ID, Listed: rec.Listed, Jobs: rec.Jobs}
}

func (c *cluster) runRecord(ctx context.Context, id string) (jobsRun, error) {
	topo := bus.Topology{Prefix: c.prefix}
	kv, err := c.nats.JS.KeyValue(ctx, topo.RunsBucket())
	if err != nil {
		return jobsRun{}, err
	}
	e, err := kv.Get(ctx, coordinator.RunKey(id))
	if err != nil {
		return jobsRun{}, err
	}
	return jobs.Decode[jobsRun](e.Value())
}

type jobsRun = jobs.Run

func (c *cluster) wait(t *testing.T, ctx context.Context, s coordinator.Summary) coordinator.Summary {
	t.Helper()
	topo := bus.Topology{Prefix: c.prefix}
	rec, err := c.runRecord(ctx, s.Run)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := coordinator.New(c.nats.JS, topo).Wait(ctx, rec, nil)
	if err != nil {
		t.Fatalf("wait: %v (%+v)", err, sum)
	}
	return sum
}

// assertRows checks that every model's collection holds exactly n rows.
func (c *cluster) assertRows(t *testing.T, ctx context.Context, n int64) {
	t.Helper()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: c.milvus.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	for _, m := range []string{"clip-vit-b32", "dinov2-base"} {
		col, err := st.Open(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := col.Count(ctx)
		if err != nil || got != n {
			t.Fatalf("%s holds %d rows (%v), want exactly %d", m, got, err, n)
		}
	}
}

// TestWorkerCrashRedelivery kills a worker process with SIGKILL while it
// works; a second worker finishes the run: exactly one row per image in each
// collection, nothing lost.
func TestWorkerCrashRedelivery(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, _, run := c.publish(t, ctx, 8)

	w1, out1 := c.startWorker(t)
	// Kill it once it has finished a few jobs and is inside others.
	deadline := time.Now().Add(time.Minute)
	for strings.Count(out1.String(), "job done") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("worker 1 did not finish 3 jobs in a minute:\n%s", out1.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = w1.Wait()
	done1 := strings.Count(out1.String(), "job done")
	t.Logf("worker 1 killed after %d jobs", done1)
	if done1 >= int(run.Jobs) {
		t.Fatalf("worker 1 finished all %d jobs before the kill; the test proves nothing", run.Jobs)
	}

	c.startWorker(t)
	sum := c.wait(t, ctx, run)
	if !sum.Complete || sum.Stored != int64(c.n) || len(sum.Failed) != 0 {
		t.Fatalf("after the crash: %+v", sum)
	}
	c.assertRows(t, ctx, int64(c.n))
}

// TestGracefulShutdown sends SIGTERM to a worker in the middle of a run: it
// exits 0 within its drain timeout and leaves nothing unacknowledged; a
// second worker completes the run with exactly one row per image.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 80)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js, topo, run := c.publish(t, ctx, 4)

	w1, out1 := c.startWorker(t, "--drain-timeout", "10s")
	deadline := time.Now().Add(time.Minute)
	for strings.Count(out1.String(), "job done") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("worker did not start working:\n%s", out1.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := w1.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := w1.Wait()
	if err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, out1.String())
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("worker took %s to stop, beyond its 10 s drain timeout", el)
	}
	if !strings.Contains(out1.String(), "worker stopping") {
		t.Fatalf("no graceful stop in the log:\n%s", out1.String())
	}
	cons, err := js.Consumer(ctx, topo.JobsStream(), topo.WorkersConsumer())
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 {
		t.Fatalf("%d jobs left unacknowledged after a graceful stop", info.NumAckPending)
	}

	c.startWorker(t)
	sum := c.wait(t, ctx, run)
	if !sum.Complete || sum.Stored != int64(c.n) {
		t.Fatalf("after the restart: %+v", sum)
	}
	c.assertRows(t, ctx, int64(c.n))
}

// TestOverlappingRunsExitCode: while a lease on the source is held, a
// second coordinator run exits with status 3 and publishes nothing.
func TestOverlappingRunsExitCode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topo := bus.Topology{Prefix: c.prefix}
	if err := topo.Ensure(ctx, c.nats.JS, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	kv, err := c.nats.JS.KeyValue(ctx, topo.LeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, coordinator.SourceKey(c.source), []byte("other-host-42")); err != nil {
		t.Fatal(err)
	}
	cmd := execCommand("coordinator", "run", "--source", c.source, "--models", "clip-vit-b32")
	cmd.Env = append(os.Environ(), c.env(t)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitLeaseHeld {
		t.Fatalf("second run: %v, want exit status %d\n%s", err, exitLeaseHeld, out)
	}
	if !strings.Contains(string(out), "other-host-42") {
		t.Fatalf("the message does not name the lease holder:\n%s", out)
	}
	s, err := c.nats.JS.Stream(ctx, topo.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 0 {
		t.Fatalf("the refused run published %d jobs", info.State.Msgs)
	}
}

// TestCoordinatorRunWaitCLI runs the whole thing through the binary:
// a worker process and `coordinator run --wait`, which prints the summary
// and exits 0.
func TestCoordinatorRunWaitCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	c.startWorker(t, "--metrics-addr", metricsAddr)
	cmd := execCommand("coordinator", "run", "--source", c.source, "--models", "clip-vit-b32,dinov2-base", "--wait", "--timeout", "2m", "--job-size", "8")
	cmd.Env = append(os.Environ(), c.env(t)...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "complete: 20 listed, 20 stored, 0 failed") {
		t.Fatalf("coordinator run --wait: %v\n%s", err, out)
	}
	qcmd := execCommand("query", "--model", "dinov2-base", "--uri", "s3://"+c.minio.Bucket+"/imgs/0005.jpg", "--top-k", "2")
	qcmd.Env = append(os.Environ(), c.env(t)...)
	qout, err := qcmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(qout)), "\n")
	if err != nil || len(lines) != 3 || !strings.HasSuffix(lines[1], "/imgs/0005.jpg") {
		t.Fatalf("query --uri: %v\n%s", err, qout)
	}
	// The same by id: the ids --json prints lead back to the same answer.
	jcmd := execCommand("query", "--model", "dinov2-base", "--uri", "s3://"+c.minio.Bucket+"/imgs/0005.jpg", "--top-k", "2", "--json")
	jcmd.Env = append(os.Environ(), c.env(t)...)
	jout, err := jcmd.Output()
	var hits []struct{ ID, URI string }
	if err != nil || json.Unmarshal(jout, &hits) != nil || len(hits) != 2 || hits[0].ID == "" {
		t.Fatalf("query --json: %v\n%s", err, jout)
	}
	icmd := execCommand("query", "--model", "dinov2-base", "--id", hits[0].ID, "--top-k", "2", "--json")
	icmd.Env = append(os.Environ(), c.env(t)...)
	iout, err := icmd.Output()
	var byID []struct{ ID, URI string }
	if err != nil || json.Unmarshal(iout, &byID) != nil || len(byID) != 2 || byID[0] != hits[0] || byID[1] != hits[1] {
		t.Fatalf("query --id %s: %v\n%s\nwant %+v", hits[0].ID, err, iout, hits)
	}

	// status: the run, complete, as JSON (stdout is not a terminal).
	scmd := execCommand("status")
	scmd.Env = append(os.Environ(), c.env(t)...)
	sout, err := scmd.Output()
	var runs []runStatus
	if err != nil || json.Unmarshal(sout, &runs) != nil || len(runs) != 1 {
		t.Fatalf("status: %v\n%s", err, sout)
	}
	if r := runs[0]; r.State != "complete" || r.Listed != 20 || r.Embedded != 20 || r.Failed != 0 || r.Source != c.source {
		t.Fatalf("status: %+v", r)
	}
	one := execCommand("status", runs[0].Run)
	one.Env = append(os.Environ(), c.env(t)...)
	if oout, err := one.Output(); err != nil || !strings.Contains(string(oout), `"state":"complete"`) {
		t.Fatalf("status RUN: %v\n%s", err, oout)
	}

	// The worker's metrics count what it embedded.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`embedfleet_worker_images_embedded_total{model="clip-vit-b32"} 20`,
		`embedfleet_worker_items_total{outcome="stored"} 20`, `embedfleet_worker_jobs_total{outcome="acked"} 3`,
		`embedfleet_worker_engine_busy_seconds_total{model="dinov2-base"} `} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
}

// photoFolder writes n generated photos, p00.jpg onwards, into a new folder
// and returns it with the query: photo q resized by scale and recompressed.
func photoFolder(t *testing.T, r *rand.Rand, n, q int, scale float64) (dir string, query []byte) {
	t.Helper()
	dir = t.TempDir()
	for i := range n {
		m := testimages.Photo(r, 150, 300)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("p%02d.jpg", i)), testimages.JPEG(m, 90), 0o644); err != nil {
			t.Fatal(err)
		}
		if i == q {
			query = testimages.JPEG(testimages.Scale(m, scale), 70)
		}
	}
	return dir, query
}

// TestDevFindsTheOriginal runs `embedfleet dev` on generated images and a
// resized copy of one of them.
func TestDevFindsTheOriginal(t *testing.T) {
	t.Parallel()
	dir, query := photoFolder(t, rand.New(rand.NewPCG(5, 6)), 24, 11, 0.7)
	q := filepath.Join(t.TempDir(), "q.jpg")
	os.WriteFile(q, query, 0o644)
	env := append(ortEnv(t, tinyModels(t)), "EMBEDFLEET_MILVUS_BIN="+testenv.Binary(t, testenv.EnvMilvusBin))
	out, err := runSplit(t, env, "dev", "--images", dir, "--query", q, "--top-k", "1", "--job-size", "5")
	if err != nil {
		t.Fatalf("dev: %v\n%s", err, out)
	}
	if !strings.Contains(out, "complete: 24 listed, 24 stored, 0 failed") || strings.Count(out, "/p11.jpg") != 2 {
		t.Fatalf("dev output:\n%s", out)
	}
}

func TestMilvusLiteVersionMatchesInstaller(t *testing.T) {
	script, err := os.ReadFile(repoPath(t, "deploy", "install", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "\nMILVUS_LITE_VERSION="+milvusLiteVersion+"\n") {
		t.Fatalf("deploy/install/deps.sh does not pin milvus-lite %s, which `embedfleet dev` looks for", milvusLiteVersion)
	}
}

// TestIncrementalCLI: `coordinator run --incremental` indexes everything,
// `--dry-run` reports a change without making it, and the next incremental
// run applies exactly that change; status shows the diff.
func TestIncrementalCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 20)
	c.startWorker(t)
	ctx := context.Background()
	run := func(args ...string) string {
		t.Helper()
		cmd := execCommand(append([]string{"coordinator", "run", "--source", c.source, "--models", "clip-vit-b32,dinov2-base",
			"--job-size", "4", "--timeout", "2m"}, args...)...)
		cmd.Env = append(os.Environ(), c.env(t)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("coordinator run %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("--incremental")
	if !strings.Contains(out, "diff clip-vit-b32: new=20 changed=0 unchanged=0 deleted=0") || !strings.Contains(out, "complete: 20 listed, 20 stored") {
		t.Fatalf("first incremental run:\n%s", out)
	}
	for _, k := range []string{"imgs/0003.jpg", "imgs/0010.jpg", "imgs/0011.jpg"} {
		if err := c.minio.Client.RemoveObject(ctx, c.minio.Bucket, k, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(11, 11))
	for _, k := range []string{"imgs/0100.jpg", "imgs/0101.jpg"} {
		data := testimages.JPEG(testimages.Photo(r, 120, 200), 90)
		c.minio.Client.PutObject(ctx, c.minio.Bucket, k, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	}
	out = run("--incremental", "--dry-run")
	if !strings.Contains(out, "diff dinov2-base: new=2 changed=0 unchanged=17 deleted=3") {
		t.Fatalf("dry run:\n%s", out)
	}
	c.assertRows(t, ctx, 20) // the dry run changed nothing
	out = run("--incremental")
	if !strings.Contains(out, "diff dinov2-base: new=2 changed=0 unchanged=17 deleted=3") || !strings.Contains(out, "complete: 2 listed, 2 stored") {
		t.Fatalf("second incremental run:\n%s", out)
	}
	c.assertRows(t, ctx, 19)
	out = run("--incremental")
	if !strings.Contains(out, "new=0 changed=0 unchanged=19 deleted=0") {
		t.Fatalf("third incremental run:\n%s", out)
	}

	scmd := execCommand("status")
	scmd.Env = append(os.Environ(), c.env(t)...)
	sout, err := scmd.Output()
	var runs []runStatus
	if err != nil || json.Unmarshal(sout, &runs) != nil || len(runs) != 3 {
		t.Fatalf("status: %v\n%s", err, sout)
	}
	if d := runs[1].Diff["clip-vit-b32"]; !runs[1].Incremental || d.New != 2 || d.Deleted != 3 {
		t.Fatalf("status of the second run: %+v", runs[1])
	}
}
