package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// TestHostileBucket runs the whole system on a bucket that holds a
// progressive-JPEG decode bomb (20,000 scans), a truncated JPEG and a HEIC
// file beside good images, and prefixes that differ by one character or
// hold LIKE's wildcards: the bomb is refused by its scan count and the job
// finishes; verify counts the three as failed and exits 0; verify and
// repair of one prefix never touch the rows of another; incremental runs
// retry a failed object only once its ETag changes.
func TestHostileBucket(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 12)
	c.startWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(21, 21))
	good := func() []byte { return testimages.JPEG(testimages.Photo(r, 120, 200), 90) }
	put := func(key string, data []byte) {
		t.Helper()
		if _, err := c.minio.Client.PutObject(ctx, c.minio.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bomb := testimages.ScanBomb(testimages.ProgressiveJPEG(testimages.Photo(r, 64, 65), 90), 20000)
	trunc := good()
	put("imgs/h-bomb.jpg", bomb)
	put("imgs/h-truncated.jpg", trunc[:len(trunc)/2])
	put("imgs/h-phone.jpg", append([]byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"), make([]byte, 64)...))
	for _, k := range []string{"fold/x.jpg", "folder/inside.jpg", "odd_/a.jpg", "oddX/a.jpg"} {
		put(k, good())
	}
	runCmd := func(args ...string) (string, int) { t.Helper(); return c.run(t, args...) }
	bucket := "s3://" + c.minio.Bucket + "/"
	start := time.Now()
	out, code := runCmd("coordinator", "run", "--source", bucket, "--models", "clip-vit-b32", "--job-size", "8", "--wait", "--timeout", "2m")
	if !strings.Contains(out, "19 listed, 16 stored, 3 failed") {
		t.Fatalf("run: %d\n%s", code, out)
	}
	for _, want := range []string{"imgs/h-bomb.jpg: image too large: jpeg has more than 100 progressive scans", "imgs/h-phone.jpg: unsupported image format: the object is a HEIC image", "imgs/h-truncated.jpg: corrupt image"} {
		if !strings.Contains(out, want) {
			t.Errorf("run output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("the run with the bomb took %v", time.Since(start))

	// Recorded failures are what the bucket holds: verify is clean.
	out, code = runCmd("verify", "--source", bucket, "--models", "clip-vit-b32")
	if code != 0 || !strings.Contains(out, "listed=19 ok=16 missing=0 stale=0 extra=0 failed=3") {
		t.Fatalf("verify of a bucket whose only problems are recorded failures: %d\n%s", code, out)
	}
	// A prefix is a key prefix: fold/ is not folder/, odd_/ is not oddX/.
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: c.milvus.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	col, err := st.Open(ctx, "clip-vit-b32")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"fold/", "odd_/", "odd%/", "fold"} {
		out, code = runCmd("verify", "--source", bucket+p, "--models", "clip-vit-b32", "--repair", "--timeout", "1m")
		if code != 0 || strings.Contains(out, "extra=1") || strings.Contains(out, "deleted 1") {
			t.Fatalf("verify --repair %s: %d\n%s", p, code, out)
		}
	}
	for _, k := range []string{"fold/x.jpg", "folder/inside.jpg", "odd_/a.jpg", "oddX/a.jpg"} {
		if _, found, err := col.Get(ctx, vecstore.ID(bucket+k)); err != nil || !found {
			t.Errorf("the row of %s is gone after verifying other prefixes (%v)", k, err)
		}
	}
	if n, err := col.Count(ctx); err != nil || n != 16 {
		t.Fatalf("%d rows (%v), want 16", n, err)
	}

	// Incremental runs: a failed object is tried again only when it changes.
	inc := func() string {
		out, code := runCmd("coordinator", "run", "--source", bucket+"imgs/", "--models", "clip-vit-b32", "--incremental", "--timeout", "2m")
		if code != 0 && code != exitFailures {
			t.Fatalf("incremental run: %d\n%s", code, out)
		}
		return out
	}
	inc() // the first writes the manifest
	if out := inc(); !strings.Contains(out, "diff clip-vit-b32: new=0 changed=0 unchanged=15 deleted=0") {
		t.Fatalf("second incremental run, nothing changed:\n%s", out)
	}
	put("imgs/h-truncated.jpg", good())
	if out := inc(); !strings.Contains(out, "new=0 changed=1 unchanged=14 deleted=0") || !strings.Contains(out, "1 listed, 1 stored") {
		t.Fatalf("incremental run after the broken file was replaced:\n%s", out)
	}
	out, code = runCmd("verify", "--source", bucket, "--models", "clip-vit-b32")
	if code != 0 || !strings.Contains(out, "listed=19 ok=17 missing=0 stale=0 extra=0 failed=2") {
		t.Fatalf("verify after the fix: %d\n%s", code, out)
	}
}

// TestServeMemoryBound: `embedfleet serve` as a process, 200 concurrent
// uploads of 9400x9400 JPEGs (530 MiB each to decode): each is answered
// (admitted, or 503 at once) within the timeout, and the process's peak RSS
// stays under its stated bound: what it held before the uploads, plus
// --max-memory-mib, plus the heap slack (docs/security.md).
func TestServeMemoryBound(t *testing.T) {
	t.Parallel()
	const budgetMiB = 1024
	l := serveUnderLoad(t, budgetMiB, 200)
	bound := l.idleKiB + (budgetMiB+256)*1024
	t.Logf("200 uploads of 9400x9400: %v, slowest answer %v; RSS idle %d MiB, peak %d MiB, bound %d MiB",
		l.codes, l.slowest.Round(time.Millisecond), l.idleKiB>>10, l.peakKiB>>10, bound>>10)
	for code, n := range l.codes {
		// 200: admitted, decoded, embedded and searched (the collection
		// is empty, so with no hits).
		if code != 404 && code != 413 && code != 503 && code != 200 {
			t.Errorf("%d answers with status %d", n, code)
		}
	}
	if l.codes[503] == 0 || l.codes[404]+l.codes[200] == 0 {
		t.Errorf("answers %v: want some admitted and some shed", l.codes)
	}
	if l.slowest > 21*time.Second {
		t.Errorf("slowest answer %v, past the 20 s timeout", l.slowest)
	}
	if l.peakKiB > bound {
		t.Fatalf("peak RSS %d MiB, over the bound of %d MiB", l.peakKiB>>10, bound>>10)
	}
}

// BenchmarkServeMemory prints the figures behind the query server's memory
// bound (docs/security.md): idle and peak RSS of a serve process under 200
// concurrent 9400x9400 uploads, for two budgets. `make bench-hostile`.
func BenchmarkServeMemory(b *testing.B) {
	for _, budget := range []int{1024, 2048} {
		b.Run(fmt.Sprintf("budget_mib=%d", budget), func(b *testing.B) {
			for b.Loop() {
				l := serveUnderLoad(b, budget, 200)
				b.ReportMetric(float64(l.idleKiB)/1024, "idle_rss_mib")
				b.ReportMetric(float64(l.peakKiB)/1024, "peak_rss_mib")
				b.ReportMetric(float64(l.codes[503]), "shed")
				b.ReportMetric(float64(l.codes[200]+l.codes[404]), "admitted")
				b.ReportMetric(l.slowest.Seconds(), "slowest_s")
			}
		})
	}
}

type loadResult struct {
	codes            map[int]int
	slowest          time.Duration
	idleKiB, peakKiB int
}

// serveUnderLoad starts `embedfleet serve` with a budget of budgetMiB on a
// real (empty) milvus-lite and posts n 9400x9400 JPEGs at once.
func serveUnderLoad(tb testing.TB, budgetMiB, n int) loadResult {
	mv := testenv.StartMilvus(tb)
	// An empty collection: every admitted upload is decoded, embedded and
	// searched (and finds nothing).
	spec, err := embed.LoadSpec(filepath.Join(tinyModels(tb), "clip-vit-b32"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := st.Ensure(ctx, spec); err != nil {
		tb.Fatal(err)
	}
	st.Close(ctx)
	base, cmd := startServe(tb, ortEnv(tb, tinyModels(tb)), "--models", "clip-vit-b32", "--milvus-addr", mv.Addr,
		"--max-memory-mib", strconv.Itoa(budgetMiB), "--timeout", "20s")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 9400, 9400)), &jpeg.Options{Quality: 50}); err != nil {
		tb.Fatal(err)
	}
	huge := buf.Bytes()
	// Warm up: one small search, so the model and the Milvus client hold
	// what they keep; then the idle figure.
	if res, err := http.Post(base+"/v1/search?k=1", "image/png", bytes.NewReader(stripPNG(tb, 64, 48))); err == nil {
		res.Body.Close()
	}
	l := loadResult{codes: map[int]int{}, idleKiB: rssKiB(tb, cmd.Process.Pid, "VmRSS")}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	client := &http.Client{Timeout: 30 * time.Second}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			res, err := client.Post(base+"/v1/search?k=1", "image/jpeg", bytes.NewReader(huge))
			if err != nil {
				tb.Error(err)
				return
			}
			res.Body.Close()
			mu.Lock()
			l.codes[res.StatusCode]++
			l.slowest = max(l.slowest, time.Since(t0))
			mu.Unlock()
		}()
	}
	wg.Wait()
	l.peakKiB = rssKiB(tb, cmd.Process.Pid, "VmHWM")
	return l
}

// rssKiB reads a field of /proc/PID/status (VmRSS, VmHWM) in KiB.
func rssKiB(t testing.TB, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
