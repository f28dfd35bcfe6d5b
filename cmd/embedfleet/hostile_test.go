package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"io"
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
	l := serveUnderLoad(t, budgetMiB, loadMix{uploads: 200})
	checkLoad(t, l, budgetMiB)
	if l.codes["upload"][503] == 0 || l.codes["upload"][404]+l.codes["upload"][200] == 0 {
		t.Errorf("answers %v: want some admitted and some shed", l.codes)
	}
}

// TestServeMemoryBoundMixed: the same bound holds for every route that
// reads objects, at once: 100 concurrent originals of an indexed 64 MiB
// object, 40 concurrent thumbnails (each size its own) of an indexed
// 9400x9400 progressive JPEG, and 200 uploads of a 9400x9400 JPEG, each
// client trying again after a 503 as told (Retry-After) for 15 s. Every
// request is answered within its timeout; some of each kind are served.
func TestServeMemoryBoundMixed(t *testing.T) {
	t.Parallel()
	const budgetMiB = 2048
	l := serveUnderLoad(t, budgetMiB, loadMix{uploads: 200, originals: 100, thumbnails: 40, retryFor: 15 * time.Second})
	checkLoad(t, l, budgetMiB)
	for _, kind := range []string{"upload", "original", "thumbnail"} {
		if l.codes[kind][200] == 0 {
			t.Errorf("no %s served: %v", kind, l.codes)
		}
	}
}

func checkLoad(t *testing.T, l loadResult, budgetMiB int) {
	t.Helper()
	bound := l.idleKiB + (budgetMiB+256)*1024
	t.Logf("answers %v, slowest %v; RSS idle %d MiB, peak %d MiB, bound %d MiB",
		l.codes, l.slowest.Round(time.Millisecond), l.idleKiB>>10, l.peakKiB>>10, bound>>10)
	for kind, codes := range l.codes {
		for code, n := range codes {
			// 200: served (an upload admitted, decoded, embedded and
			// searched); 404: an upload that found nothing; 413: could
			// never fit; 503: shed; 504: its deadline came first.
			if code != 200 && code != 404 && code != 413 && code != 503 && code != 504 {
				t.Errorf("%d %s answers with status %d", n, kind, code)
			}
		}
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
// concurrent 9400x9400 uploads, for two budgets, and under the mixed load
// of TestServeMemoryBoundMixed. `make bench-hostile`.
func BenchmarkServeMemory(b *testing.B) {
	for _, c := range []struct {
		name   string
		budget int
		mix    loadMix
	}{
		{"uploads/budget_mib=1024", 1024, loadMix{uploads: 200}},
		{"uploads/budget_mib=2048", 2048, loadMix{uploads: 200}},
		{"mixed/budget_mib=2048", 2048, loadMix{uploads: 200, originals: 100, thumbnails: 40, retryFor: 15 * time.Second}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				l := serveUnderLoad(b, c.budget, c.mix)
				b.ReportMetric(float64(l.idleKiB)/1024, "idle_rss_mib")
				b.ReportMetric(float64(l.peakKiB)/1024, "peak_rss_mib")
				served, shed := 0, 0
				for _, codes := range l.codes {
					served += codes[200] + codes[404]
					shed += codes[503]
				}
				b.ReportMetric(float64(shed), "shed")
				b.ReportMetric(float64(served), "served")
				b.ReportMetric(l.slowest.Seconds(), "slowest_s")
			}
		})
	}
}

// loadMix is how many requests of each kind serveUnderLoad sends at once,
// and for how long a client tries again after a 503 (0: never).
type loadMix struct {
	uploads, originals, thumbnails int
	retryFor                       time.Duration
}

type loadResult struct {
	codes            map[string]map[int]int // by kind, by status
	slowest          time.Duration
	idleKiB, peakKiB int
}

// serveUnderLoad starts `embedfleet serve` with a budget of budgetMiB on a
// real milvus-lite (and MinIO, for originals and thumbnails) and sends the
// mix at once: uploads of a 9400x9400 JPEG; originals of an indexed 64 MiB
// object; thumbnails, each at its own size, of an indexed 9400x9400
// progressive JPEG.
func serveUnderLoad(tb testing.TB, budgetMiB int, mix loadMix) loadResult {
	mv := testenv.StartMilvus(tb)
	// An empty collection but for the indexed objects: every admitted
	// upload is decoded, embedded and searched (and finds little).
	spec, err := embed.LoadSpec(filepath.Join(tinyModels(tb), "clip-vit-b32"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		tb.Fatal(err)
	}
	col, err := st.Ensure(ctx, spec)
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"--models", "clip-vit-b32", "--milvus-addr", mv.Addr, "--max-memory-mib", strconv.Itoa(budgetMiB), "--timeout", "20s"}
	env := ortEnv(tb, tinyModels(tb))
	var originalID, thumbID string
	if mix.originals+mix.thumbnails > 0 {
		m := testenv.StartMinIO(tb)
		put := func(key string, data []byte) vecstore.Row {
			if _, err := m.Client.PutObject(ctx, m.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
				tb.Fatal(err)
			}
			uri := "s3://" + m.Bucket + "/" + key
			v := make([]float32, spec.Dim)
			v[len(key)%spec.Dim] = 1
			return vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Size: int64(len(data)), Vector: v}
		}
		// An object the page would show whole: a JPEG's signature, then
		// 64 MiB in all.
		big := make([]byte, 64<<20)
		copy(big, "\xff\xd8\xff\xe0")
		prog := testimages.ProgressiveJPEG(image.NewGray(image.Rect(0, 0, 9400, 9400)), 50)
		rows := []vecstore.Row{put("big.jpg", big), put("huge-progressive.jpg", prog)}
		if err := col.Upsert(ctx, rows); err != nil {
			tb.Fatal(err)
		}
		originalID, thumbID = rows[0].ID, rows[1].ID
		args = append(args, "--s3-endpoint", m.Endpoint, "--s3-insecure", "--s3-path-style")
		env = append(env, "AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
	}
	st.Close(ctx)
	base, cmd := startServe(tb, env, args...)
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
	l := loadResult{codes: map[string]map[int]int{}, idleKiB: rssKiB(tb, cmd.Process.Pid, "VmRSS")}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 400}}
	// Each client does as clients are told to: a 503 is tried again after
	// its Retry-After, for up to retryFor; every attempt is an answer, and
	// counted.
	send := func(kind string, req func() (*http.Response, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := time.Now()
			for {
				t0 := time.Now()
				res, err := req()
				if err != nil {
					tb.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				mu.Lock()
				if l.codes[kind] == nil {
					l.codes[kind] = map[int]int{}
				}
				l.codes[kind][res.StatusCode]++
				l.slowest = max(l.slowest, time.Since(t0))
				mu.Unlock()
				if res.StatusCode != http.StatusServiceUnavailable || time.Since(first) > mix.retryFor {
					return
				}
				time.Sleep(time.Second + time.Duration(rand.IntN(500))*time.Millisecond)
			}
		}()
	}
	// Interleaved, so that every kind competes for the budget.
	for i := range max(mix.uploads, mix.originals, mix.thumbnails) {
		if i < mix.uploads {
			send("upload", func() (*http.Response, error) {
				return client.Post(base+"/v1/search?k=1", "image/jpeg", bytes.NewReader(huge))
			})
		}
		if i < mix.originals {
			send("original", func() (*http.Response, error) {
				return client.Get(base + "/v1/original?model=clip-vit-b32&id=" + originalID)
			})
		}
		if i < mix.thumbnails {
			send("thumbnail", func() (*http.Response, error) {
				return client.Get(fmt.Sprintf("%s/v1/thumbnail?model=clip-vit-b32&id=%s&size=%d", base, thumbID, 64+i*16))
			})
		}
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
