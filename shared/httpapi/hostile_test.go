package httpapi_test

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/httpapi"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// injections are values that once reached a Milvus filter expression as
// they were: through id, one returned another object's vector.
var injections = []string{
	`nope"] or uri like "s3://photos/p0%" or id in ["nope`,
	`x" or 1==1 or id=="`,
	`" || id != "`,
	`\" or true or \"`,
	`id in ["a"]`,
	"x\")\nor 1==1",
	`%`, `_`, `\`, `"`, `'`, "",
}

// TestHostileIDs: no id or uri finds anything but the object it names:
// hostile ones are 404 not indexed (or 400 for an empty one), never a hit
// and never a 500 that echoes an expression.
func TestHostileIDs(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{})
	for _, h := range injections {
		for _, param := range []string{"id", "uri"} {
			a := get(t, f, "/v1/search?model=clip-vit-b32&k=3&"+param+"="+url.QueryEscape(h))
			switch {
			case h == "" && a.status == http.StatusBadRequest:
			case a.status == http.StatusNotFound && strings.Contains(a.err, "not indexed"):
			default:
				t.Errorf("%s=%q: %d %q %+v, want 404 not indexed", param, h, a.status, a.err, a.resp.Hits)
			}
			if strings.Contains(a.err, "expr") || strings.Contains(a.err, "parse") {
				t.Errorf("%s=%q: the error comes from a filter expression: %q", param, h, a.err)
			}
		}
	}
	// What a client sends comes back clipped and escaped, never whole: a
	// 100,000-character model, a k of 10,000 characters.
	for _, q := range []string{"model=" + strings.Repeat("m", 100000) + "&text=cat", "model=" + url.QueryEscape("x\x1b]0;t\x07") + "&text=cat",
		"model=clip-vit-b32&text=cat&k=" + strings.Repeat("9", 10000)} {
		a := get(t, f, "/v1/search?"+q)
		if a.status/100 != 4 || len(a.err) > 400 || strings.ContainsAny(a.err, "\x1b\x07") {
			t.Errorf("search %.40s...: %d, an error of %d bytes: %.200q", q, a.status, len(a.err), a.err)
		}
	}
	// The real thing still works.
	a := get(t, f, "/v1/search?model=clip-vit-b32&k=1&uri="+url.QueryEscape("s3://photos/p03.jpg"))
	if a.status != 200 || len(a.resp.Hits) != 1 || a.resp.Hits[0].URI != "s3://photos/p03.jpg" {
		t.Fatalf("uri of an indexed photo: %d %q %+v", a.status, a.err, a.resp.Hits)
	}
}

// TestTimeoutAnswered: a request whose decode runs past --timeout gets its
// 504 at the deadline (plus the short grace), not when the decode ends or the
// connection is cut.
func TestTimeoutAnswered(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{Timeout: 500 * time.Millisecond, MaxBodyBytes: 64 << 20,
		Limits: imageprep.Limits{MaxScans: 1 << 30, MaxDecodeTime: time.Minute}})
	big := testimages.ProgressiveJPEG(testimages.Scale(testimages.Photo(rand.New(rand.NewPCG(6, 6)), 200, 201), 10), 90)
	bomb := testimages.ScanBomb(big, 800) // about 2 s of decoding, 40 MB
	start := time.Now()
	a := post(t, f, "model=clip-vit-b32", bomb)
	took := time.Since(start)
	if a.status != http.StatusGatewayTimeout {
		t.Fatalf("a decode past the deadline: %d %q, want 504", a.status, a.err)
	}
	// The decode alone takes about 2 s; the answer must not wait for it.
	if took > 1500*time.Millisecond {
		t.Fatalf("the 504 came after %v, want it at the 500 ms deadline", took)
	}
}

// TestMemoryBudget: concurrent uploads of huge images (each takes hundreds
// of MiB to decode) are admitted by their cost against the budget: each is
// answered 200, 413 or 503 with Retry-After, and never more than the budget
// is admitted at once, as the gauge of admitted bytes shows.
func TestMemoryBudget(t *testing.T) {
	t.Parallel()
	const budget = 400 << 20
	f := setup(t, httpapi.Config{MaxMemoryBytes: budget, Timeout: 60 * time.Second})
	// 6000x6000 grey: 36 MP, 216 MiB to decode by its header, 0.2 MB on the wire.
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 6000, 6000)), &jpeg.Options{Quality: 50}); err != nil {
		t.Fatal(err)
	}
	huge := buf.Bytes()
	// 9000x9000 (within the pixel limit) would need more than the whole
	// budget: 413 at once.
	if a := post(t, f, "model=clip-vit-b32", jpegWithHeaderSize(t, huge, 9000, 9000)); a.status != http.StatusRequestEntityTooLarge || !strings.Contains(a.err, "memory budget") {
		t.Fatalf("an image that can never fit: %d %q, want 413 naming the budget", a.status, a.err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
	)
	stop, sampled := make(chan struct{}), make(chan struct{})
	maxAdmitted := 0.0
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			maxAdmitted = max(maxAdmitted, f.api.AdmittedBytes())
			time.Sleep(time.Millisecond)
		}
	}()
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/search?model=clip-vit-b32", bytes.NewReader(huge))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			mu.Lock()
			codes[res.StatusCode]++
			mu.Unlock()
			if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	t.Logf("40 concurrent 6000x6000 uploads: %v; most admitted at once %.0f MiB of %d", codes, maxAdmitted/(1<<20), budget>>20)
	if codes[200] == 0 || codes[503] == 0 || codes[200]+codes[503] != 40 {
		t.Fatalf("answers %v: want some 200 and some 503, nothing else", codes)
	}
	if maxAdmitted > budget {
		t.Fatalf("admitted %.0f bytes at once, over the %d budget", maxAdmitted, budget)
	}
	if f.api.AdmittedBytes() != 0 {
		t.Fatalf("%.0f bytes still admitted after every answer", f.api.AdmittedBytes())
	}
}

// jpegWithHeaderSize rewrites the frame size of a baseline JPEG.
func jpegWithHeaderSize(t *testing.T, b []byte, w, h uint16) []byte {
	t.Helper()
	b = bytes.Clone(b)
	i := bytes.Index(b, []byte{0xFF, 0xC0})
	if i < 0 {
		t.Fatal("no SOF0")
	}
	b[i+5], b[i+6], b[i+7], b[i+8] = byte(h>>8), byte(h), byte(w>>8), byte(w)
	return b
}

// TestThumbnailDeadline: a thumbnail whose decode runs past --timeout gets
// its 504 at the deadline, as a search does (it used to answer 200 whenever
// the decode ended); it is counted like every other request.
func TestThumbnailDeadline(t *testing.T) {
	t.Parallel()
	big := testimages.ProgressiveJPEG(testimages.Scale(testimages.Photo(rand.New(rand.NewPCG(7, 7)), 200, 201), 10), 90)
	bomb := testimages.ScanBomb(big, 800) // about 2 s of decoding
	const uri = "s3://photos/slow-thumbnail.jpg"
	f := setup(t, httpapi.Config{Timeout: 500 * time.Millisecond,
		Limits: imageprep.Limits{MaxScans: 1 << 30, MaxDecodeTime: time.Minute},
		ReadObject: func(_ context.Context, u string, max int64) ([]byte, error) {
			if u != uri || int64(len(bomb)) > max {
				return nil, objstore.ErrNotFound
			}
			return bomb, nil
		}})
	ctx := context.Background()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: f.mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	col, err := st.Open(ctx, "clip-vit-b32")
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, col.Dim)
	v[0] = 1
	if err := col.Upsert(ctx, []vecstore.Row{{ID: vecstore.ID(uri), URI: uri, ETag: "e", Size: int64(len(bomb)), Vector: v}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := http.Get(f.srv.URL + "/v1/thumbnail?model=clip-vit-b32&size=128&id=" + vecstore.ID(uri))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if took := time.Since(start); res.StatusCode != http.StatusGatewayTimeout || took > 1500*time.Millisecond {
		t.Fatalf("a thumbnail whose decode takes about 2 s, with a 500 ms timeout: %d after %v, want 504 by the deadline", res.StatusCode, took)
	}
}
