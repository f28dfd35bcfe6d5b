package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// run runs the binary with the cluster's environment and returns its
// combined output and exit code.
func (c *cluster) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := execCommand(args...)
	cmd.Env = append(os.Environ(), c.env(t)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// waitResults blocks until the run's results stream holds at least n
// results.
func (c *cluster) waitResults(t *testing.T, ctx context.Context, run string, n uint64) {
	t.Helper()
	for {
		st, err := c.nats.JS.Stream(ctx, c.prefix+"_RESULTS")
		if err == nil {
			subj := strings.ToLower(c.prefix) + ".results." + run
			if info, err := st.Info(ctx, jetstreamSubjects(subj)); err == nil && info.State.Subjects[subj] >= n {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("fewer than %d results for run %s: %v", n, run, ctx.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNATSRestart kills the nats-server process (file storage) with SIGKILL
// in the middle of a run and starts it again: the run completes and every
// image is stored exactly once.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, _, run := c.publish(t, ctx, 8)
	w, out := c.startWorker(t)
	c.waitResults(t, ctx, run.Run, 3)
	c.nats.Kill(t)
	time.Sleep(2 * time.Second)
	c.nats.Restart(t)
	sum := c.wait(t, ctx, run)
	if !sum.Complete || sum.Stored != 200 || len(sum.Failed) != 0 {
		t.Fatalf("after the NATS restart: %+v\n%s", sum, out.String())
	}
	c.assertRows(t, ctx, 200)
	if w.ProcessState != nil {
		t.Fatalf("the worker exited during the NATS outage:\n%s", out.String())
	}
}

// flakyProxy forwards to MinIO but answers about one request in five with
// a 503 or a dropped connection.
func flakyProxy(t *testing.T, target string) (addr string, failed *atomic.Int64) {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	failed = &atomic.Int64{}
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch k := n.Add(1); {
		case k%10 == 3:
			failed.Add(1)
			w.Header().Set("Retry-After", "0")
			http.Error(w, "<Error><Code>SlowDown</Code><Message>flaky proxy</Message></Error>", http.StatusServiceUnavailable)
		case k%10 == 7:
			failed.Add(1)
			if hj, ok := w.(http.Hijacker); ok {
				conn, _, _ := hj.Hijack()
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST, not FIN
				}
				conn.Close()
				return
			}
			http.Error(w, "reset", http.StatusBadGateway)
		default:
			rp.ServeHTTP(w, r)
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), failed
}

// TestS3Flaky puts a proxy in front of MinIO that fails 20% of requests
// with 503 or a reset connection: the run completes with nothing lost.
func TestS3Flaky(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 120)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	proxy, failed := flakyProxy(t, c.minio.Endpoint)
	_, _, run := c.publish(t, ctx, 8)
	cmd := execCommand("worker", "--models", "clip-vit-b32,dinov2-base", "--batch-size", "8", "--s3-endpoint", proxy, "--log-level", "warn")
	cmd.Env = append(os.Environ(), c.env(t)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sum := c.wait(t, ctx, run)
	if !sum.Complete || sum.Stored != 120 || len(sum.Failed) != 0 {
		t.Fatalf("through the flaky proxy: %+v\n%s", sum, out.String())
	}
	c.assertRows(t, ctx, 120)
	if failed.Load() < 10 {
		t.Fatalf("the proxy failed only %d requests; the test proves nothing", failed.Load())
	}
	t.Logf("the proxy failed %d requests", failed.Load())
}

// TestHostileObjects mixes good images with hostile objects under image
// names: every good image is stored, every hostile one is stored (when it is
// a valid if unusual image) or recorded with its reason, and the worker
// process never restarts.
func TestHostileObjects(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 40)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fixtures := repoPath(t, "shared", "imageprep", "testdata", "images")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(fixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := testimages.JPEG(testimages.Photo(rand.New(rand.NewPCG(1, 1)), 200, 300), 90)
	strip := testimages.JPEG(testimages.Photo(rand.New(rand.NewPCG(2, 2)), 2, 3), 90) // tiny but valid
	hostile := map[string][]byte{
		// Must fail, with a reason:
		"imgs/h-truncated.jpg": good[:len(good)/3],
		"imgs/h-empty.jpg":     {},
		"imgs/h-bomb.png":      pngHeaderClaiming(30000, 30000),
		"imgs/h-text.jpg":      []byte("just text\n"),
		"imgs/h-html.png":      []byte("<!doctype html><html><body>403 Forbidden</body></html>"),
		// Unusual but valid: must be stored.
		"imgs/v-cmyk.jpg":     read("cmyk_160x120.jpg"),
		"imgs/v-16bit.png":    read("rgb16_120x90.png"),
		"imgs/v-animated.gif": read("anim_90x70.gif"),
		"imgs/v-exif6.jpg":    read("exif6_400x300.jpg"),
		"imgs/v-strip.png":    stripPNG(t, 20000, 1),
		"imgs/v-tiny.jpg":     strip,
	}
	for k, v := range hostile {
		if _, err := c.minio.Client.PutObject(ctx, c.minio.Bucket, k, bytes.NewReader(v), int64(len(v)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, _, run := c.publish(t, ctx, 8)
	w, out := c.startWorker(t)
	sum := c.wait(t, ctx, run)
	if !sum.Complete {
		t.Fatalf("run incomplete: %+v", sum)
	}
	failed := map[string]string{}
	for _, f := range sum.Failed {
		failed[f.Key] = f.Reason
	}
	for k := range hostile {
		reason, bad := failed[k]
		if strings.HasPrefix(filepath.Base(k), "h-") != bad {
			t.Errorf("%s: failed=%v (%s)", k, bad, reason)
		}
		if bad {
			t.Logf("%s: %s", k, reason)
		}
	}
	if sum.Stored != 40+6 || len(sum.Failed) != 5 {
		t.Fatalf("stored %d, failed %d; want 46 and 5", sum.Stored, len(sum.Failed))
	}
	c.assertRows(t, ctx, 46)
	if w.ProcessState != nil {
		t.Fatalf("the worker exited:\n%s", out.String())
	}
	if strings.Contains(out.String(), "panic") {
		t.Fatalf("the worker panicked:\n%s", out.String())
	}
}

// TestVerifyCLI: verify is clean after a run, exits 2 when rows are lost or
// left behind, and --repair fixes both.
func TestVerifyCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 16)
	c.startWorker(t)
	ctx := context.Background()
	runCmd := func(args ...string) (string, int) { t.Helper(); return c.run(t, args...) }
	if out, code := runCmd("coordinator", "run", "--source", c.source, "--models", "clip-vit-b32,dinov2-base", "--wait", "--timeout", "2m"); code != 0 {
		t.Fatalf("run: %d\n%s", code, out)
	}
	verify := []string{"verify", "--source", c.source, "--models", "clip-vit-b32,dinov2-base", "--timeout", "2m"}
	if out, code := runCmd(verify...); code != 0 || !strings.Contains(out, "verify dinov2-base: listed=16 ok=16 missing=0 stale=0 extra=0") {
		t.Fatalf("verify after the run: %d\n%s", code, out)
	}
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: c.milvus.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	col, _ := st.Open(ctx, "dinov2-base")
	lost := "s3://" + c.minio.Bucket + "/imgs/0004.jpg"
	if err := col.Delete(ctx, []string{vecstore.ID(lost)}); err != nil {
		t.Fatal(err)
	}
	c.minio.Client.RemoveObject(ctx, c.minio.Bucket, "imgs/0009.jpg", minio.RemoveObjectOptions{})
	out, code := runCmd(verify...)
	if code != exitFailures || !strings.Contains(out, "verify dinov2-base: listed=15 ok=14 missing=1 stale=0 extra=1") || !strings.Contains(out, "missing "+lost) {
		t.Fatalf("verify of a damaged index: %d\n%s", code, out)
	}
	out, code = runCmd(append(verify, "--repair")...)
	if code != 0 || !strings.Contains(out, "verify dinov2-base: listed=15 ok=15 missing=0 stale=0 extra=0 failed=0 duplicated=0") {
		t.Fatalf("verify --repair: %d\n%s", code, out)
	}

	// Copies under one id, as concurrent upserts of the same objects (a
	// redelivered job embedded while its first delivery's upsert is being
	// applied) leave them in milvus-lite: queries see one row each, count(*)
	// sees them all.
	var rows []vecstore.Row
	if err := col.Scan(ctx, "", 100, func(b []vecstore.Row) error { rows = append(rows, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	var total int64
	for try := 0; try < 20 && total <= int64(len(rows)); try++ {
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				if err := col.Upsert(ctx, rows); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if total, err = col.Count(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if total <= int64(len(rows)) {
		t.Fatalf("concurrent upserts of %d rows left %d: the server keeps one row per id now, and this test needs another way to make copies", len(rows), total)
	}
	dups := 0
	for _, r := range rows {
		if n, err := col.CountIDs(ctx, []string{r.ID}); err != nil {
			t.Fatal(err)
		} else if n > 1 {
			dups++
		}
	}
	t.Logf("concurrent upserts left %d rows for %d ids, %d of them duplicated", total, len(rows), dups)
	out, code = runCmd(verify...)
	if code != exitFailures || !strings.Contains(out, fmt.Sprintf("verify dinov2-base: listed=15 ok=15 missing=0 stale=0 extra=0 failed=0 duplicated=%d", dups)) ||
		!strings.Contains(out, "  duplicated s3://"+c.minio.Bucket+"/imgs/") {
		t.Fatalf("verify of %d rows under %d ids (%d duplicated): %d\n%s", total, len(rows), dups, code, out)
	}
	out, code = runCmd(append(verify, "--repair")...)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("rewrote %d duplicated rows", dups)) ||
		!strings.Contains(out, "verify dinov2-base: listed=15 ok=15 missing=0 stale=0 extra=0 failed=0 duplicated=0") {
		t.Fatalf("verify --repair of duplicated rows: %d\n%s", code, out)
	}
	if total, err := col.Count(ctx); err != nil || total != 15 {
		t.Fatalf("after the repair count(*) is %d, %v; want 15", total, err)
	}
}

// TestNATSClusterLeaderKilled runs the pipeline on a 3-node JetStream
// cluster (streams and buckets at 3 replicas, as the chart runs NATS):
// worker processes started without --replicas leave the streams at 3, the
// jobs stream's leader is SIGKILLed mid-run and restarted, and the run
// completes with every image stored once, the workers and the waiting
// coordinator riding through the leader change without a restart.
func TestNATSClusterLeaderKilled(t *testing.T) {
	t.Parallel()
	nc := testenv.StartNATSCluster(t, 3)
	c := newClusterOn(t, 160, &testenv.NATS{URL: nc.URL, Conn: nc.Conn, JS: nc.JS})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	topo := bus.Topology{Prefix: c.prefix}
	if err := topo.Ensure(ctx, nc.JS, bus.StreamOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	w1, out1 := c.startWorker(t)
	w2, out2 := c.startWorker(t)
	// The workers' own Ensure (no --replicas) must not scale the streams down.
	time.Sleep(2 * time.Second)
	for _, name := range []string{topo.JobsStream(), topo.ResultsStream(), "KV_" + topo.RunsBucket(), "KV_" + topo.FailuresBucket()} {
		s, err := nc.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if info, err := s.Info(ctx); err != nil || info.Config.Replicas != 3 {
			t.Fatalf("%s after the workers started: %v replicas %d, want 3", name, err, info.Config.Replicas)
		}
	}
	coord := execCommand("coordinator", "run", "--source", c.source, "--models", "clip-vit-b32,dinov2-base", "--wait", "--timeout", "6m", "--job-size", "4")
	coord.Env = append(os.Environ(), c.env(t)...)
	var cout syncBuffer
	coord.Stdout, coord.Stderr = &cout, &cout
	if err := coord.Start(); err != nil {
		t.Fatal(err)
	}
	// Mid-run: some results in, most jobs still to do.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := nc.JS.Stream(ctx, topo.ResultsStream())
		if err == nil {
			if info, err := st.Info(ctx); err == nil && info.State.Msgs >= 5 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no results after 2 minutes:\n%s\n%s", cout.String(), out1.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	leader, err := nc.StreamLeader(ctx, topo.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	nc.Nodes[leader].Kill(t)
	t.Logf("killed node %d, the jobs stream's leader", leader+1)
	time.Sleep(3 * time.Second)
	nc.Nodes[leader].Restart(t)
	err = coord.Wait()
	if err != nil || !strings.Contains(cout.String(), "complete: 160 listed, 160 stored, 0 failed") {
		t.Fatalf("coordinator run --wait through the leader change: %v\n%s\nworker 1:\n%s", err, cout.String(), out1.String())
	}
	if now, err := nc.StreamLeader(ctx, topo.JobsStream()); err == nil && now == leader {
		t.Logf("the killed node leads the jobs stream again")
	}
	// The run's deadline bounds the run; the row count gets its own, so a
	// run that was slow on a loaded machine but complete is still checked.
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	c.assertRows(t, cctx, 160)
	for i, w := range []*exec.Cmd{w1, w2} {
		if w.ProcessState != nil {
			t.Fatalf("worker %d exited during the leader change:\n%s%s", i+1, out1.String(), out2.String())
		}
	}
}
