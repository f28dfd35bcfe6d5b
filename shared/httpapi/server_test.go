package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/httpapi"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// fixture: a real milvus-lite holding 30 generated photos embedded with the
// tiny CLIP export, a DINOv2 export served but never indexed, and the server.
type fixture struct {
	mv     *testenv.Milvus
	srv    *httptest.Server
	api    *httpapi.Server
	reg    *prometheus.Registry
	photos [][]byte
	images []*image.RGBA // the photos before JPEG encoding
	vecs   [][]float32   // their CLIP vectors, as indexed
	text   *embed.TextModel
}

func setup(t *testing.T, cfg httpapi.Config) *fixture {
	t.Helper()
	if _, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatalf("onnx runtime: %v", err)
	}
	f := &fixture{}
	var models []engine.ImageEncoder
	for _, name := range []string{"clip-vit-b32", "dinov2-base"} {
		m, err := embed.Open(filepath.Join("..", "embed", "testdata", "models", name), embed.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		models = append(models, m)
	}
	clip := models[0]
	text, err := embed.OpenText(filepath.Join("..", "embed", "testdata", "models", "clip-vit-b32-text"),
		embed.Options{IntraOpThreads: 1, TokenizerDir: testenv.CLIPVocab(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { text.Close() })
	f.text = text
	f.mv, f.reg = testenv.StartMilvus(t), prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: f.mv.Addr, CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(context.Background()) })
	r := rand.New(rand.NewPCG(3, 3))
	for range 30 {
		m := testimages.Photo(r, 120, 400)
		f.images = append(f.images, m)
		f.photos = append(f.photos, testimages.JPEG(m, 92))
	}
	vecs, errs := embedAll(t, clip, f.photos)
	col, err := st.Ensure(ctx, clip.Spec())
	if err != nil {
		t.Fatal(err)
	}
	var rows []vecstore.Row
	for i, v := range vecs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		uri := fmt.Sprintf("s3://photos/p%02d.jpg", i)
		rows = append(rows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Size: int64(len(f.photos[i])), Width: 1, Height: 1, Vector: v})
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	f.vecs = vecs
	cfg.Store, cfg.Models, cfg.Registry = st, models, f.reg
	if cfg.TextModels == nil {
		cfg.TextModels = []engine.TextEncoder{text}
	}
	f.api, err = httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.api)
	t.Cleanup(func() { f.srv.Close(); f.api.Close() })
	return f
}

// embedAll embeds images with m through the engine.
func embedAll(t *testing.T, m engine.ImageEncoder, images [][]byte) ([][]float32, []error) {
	t.Helper()
	e, err := engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: 8}}, []engine.ImageEncoder{m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	vecs, errs := make([][]float32, len(images)), make([]error, len(images))
	err = e.EmbedImages(context.Background(), m.Spec().Name, len(images), func(i int) ([]byte, error) { return images[i], nil },
		func(i int, v []float32, err error) error { vecs[i], errs[i] = v, err; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return vecs, errs
}

type answer struct {
	status int
	resp   httpapi.Response
	err    string
}

func do(t *testing.T, req *http.Request) answer {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode}
	if res.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &a.resp); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	} else {
		var e struct {
			Error  string `json:"error"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Status != res.StatusCode || e.Error == "" {
			t.Fatalf("error body %q is not {error, status=%d}", body, res.StatusCode)
		}
		a.err = e.Error
	}
	return a
}

func post(t *testing.T, f *fixture, query string, body []byte) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/search?"+query, bytes.NewReader(body))
	req.Header.Set("Content-Type", "image/jpeg")
	return do(t, req)
}

func get(t *testing.T, f *fixture, path string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	return do(t, req)
}

// TestSearchByImageAndObject: a resized, re-encoded copy of an indexed photo
// finds the original first, uploaded raw or as a multipart form; an indexed
// object's own vector finds itself first.
func TestSearchByImageAndObject(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{})
	for _, i := range []int{0, 7, 19} {
		copyOf := testimages.JPEG(testimages.Scale(f.images[i], 0.7), 75)
		a := post(t, f, "model=clip-vit-b32&k=5", copyOf)
		want := fmt.Sprintf("s3://photos/p%02d.jpg", i)
		if a.status != http.StatusOK || len(a.resp.Hits) != 5 || a.resp.Hits[0].URI != want || a.resp.Model != "clip-vit-b32" {
			t.Fatalf("copy of %s: status %d %s, hits %+v", want, a.status, a.err, a.resp.Hits)
		}
		h := a.resp.Hits[0]
		if h.Rank != 1 || h.Score != (h.Cosine+1)/2 || h.Cosine < a.resp.Hits[1].Cosine {
			t.Fatalf("hit %+v: rank 1, score (cos+1)/2, best first", h)
		}

		var form bytes.Buffer
		mw := multipart.NewWriter(&form)
		_ = mw.WriteField("note", "fields other than image are ignored")
		fw, _ := mw.CreateFormFile("image", "q.jpg")
		_, _ = fw.Write(copyOf)
		_ = mw.Close()
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/search?model=clip-vit-b32&k=3", &form)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		if m := do(t, req); m.status != http.StatusOK || m.resp.Hits[0].URI != want || m.resp.Hits[0].Cosine != h.Cosine {
			t.Fatalf("multipart upload: %d %s %+v, want %s at cosine %v", m.status, m.err, m.resp.Hits, want, h.Cosine)
		}

		o := get(t, f, "/v1/search?model=clip-vit-b32&k=2&uri="+want)
		if o.status != http.StatusOK || len(o.resp.Hits) != 2 || o.resp.Hits[0].URI != want || o.resp.Hits[0].Cosine < 0.9999 {
			t.Fatalf("by object %s: %d %s %+v", want, o.status, o.err, o.resp.Hits)
		}
		byID := get(t, f, "/v1/search?model=clip-vit-b32&k=2&id="+o.resp.Hits[0].ID)
		if byID.status != http.StatusOK || len(byID.resp.Hits) != 2 || byID.resp.Hits[0].URI != want || byID.resp.Hits[1].URI != o.resp.Hits[1].URI {
			t.Fatalf("by id %s: %d %s %+v", o.resp.Hits[0].ID, byID.status, byID.err, byID.resp.Hits)
		}
	}
	if a := get(t, f, "/v1/models"); a.status != http.StatusOK {
		t.Fatalf("/v1/models: %d", a.status)
	}
}

// TestBadRequests: every mistake gets its own status and a message that
// says what to change; the server keeps answering.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{MaxBodyBytes: 64 << 10, MaxTopK: 50})
	good := f.photos[1]
	// Just over the limit: a body far larger could still be in flight when
	// the server answers 413 and closes, and the client would see a reset
	// instead of the answer.
	huge := append(append([]byte{}, good...), make([]byte, 80<<10)...)
	cases := []struct {
		name   string
		a      answer
		status int
		msg    string
	}{
		{"no model with two served", post(t, f, "", good), 400, "model is required"},
		{"unknown model", post(t, f, "model=resnet", good), 404, `"resnet" is not served`},
		{"k zero", post(t, f, "model=clip-vit-b32&k=0", good), 400, "k must be an integer from 1 to 50"},
		{"k too big", post(t, f, "model=clip-vit-b32&k=51", good), 400, "from 1 to 50"},
		{"k not a number", post(t, f, "model=clip-vit-b32&k=ten", good), 400, `"ten"`},
		{"empty body", post(t, f, "model=clip-vit-b32", nil), 400, "empty body"},
		{"not an image", post(t, f, "model=clip-vit-b32", []byte("hello, this is text")), 415, "unsupported image format"},
		{"truncated jpeg", post(t, f, "model=clip-vit-b32", good[:len(good)/2]), 422, "corrupt"},
		{"over the upload limit", post(t, f, "model=clip-vit-b32", huge), 413, "65536-byte limit"},
		{"object not indexed", get(t, f, "/v1/search?model=clip-vit-b32&uri=s3://photos/nope.jpg"), 404, "not indexed"},
		{"no uri", get(t, f, "/v1/search?model=clip-vit-b32"), 400, "uri or id is required"},
		{"uri and id", get(t, f, "/v1/search?model=clip-vit-b32&uri=s3://photos/p01.jpg&id=x"), 400, "one of them"},
		{"id not indexed", get(t, f, "/v1/search?model=clip-vit-b32&id=deadbeef"), 404, "id deadbeef is not indexed"},
		{"model never indexed", post(t, f, "model=dinov2-base", good), 404, "index some images first"},
	}
	if len(huge) <= 64<<10 {
		t.Fatalf("the huge image is only %d bytes", len(huge))
	}
	for _, c := range cases {
		if c.a.status != c.status || !strings.Contains(c.a.err, c.msg) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, c.a.status, c.a.err, c.status, c.msg)
		}
	}
	if a := post(t, f, "model=clip-vit-b32", good); a.status != http.StatusOK || a.resp.Hits[0].URI != "s3://photos/p01.jpg" {
		t.Fatalf("a good request after the bad ones: %d %s", a.status, a.err)
	}
	if n := testutil.ToFloat64(mustCounter(t, f.reg, "415")); n != 1 {
		t.Errorf("requests_total{code=415} = %v, want 1", n)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, code string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != "embedfleet_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					c.Add(m.GetCounter().GetValue())
				}
			}
		}
	}
	return c
}

// TestConcurrentUploadsShareBatches: 24 clients at once all get their own
// answer, and the batcher ran fewer inference calls than requests.
func TestConcurrentUploadsShareBatches(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{Linger: 20 * time.Millisecond, MaxBatch: 8})
	var wg sync.WaitGroup
	errs := make(chan string, 24)
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/search?model=clip-vit-b32&k=1", bytes.NewReader(f.photos[i]))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer res.Body.Close()
			var r httpapi.Response
			if err := json.NewDecoder(res.Body).Decode(&r); err != nil || res.StatusCode != 200 || len(r.Hits) != 1 {
				errs <- fmt.Sprintf("photo %d: status %d %v", i, res.StatusCode, err)
				return
			}
			if want := fmt.Sprintf("s3://photos/p%02d.jpg", i); r.Hits[0].URI != want || r.Hits[0].Cosine < 0.9999 {
				errs <- fmt.Sprintf("photo %d answered with %+v (another request's vector?)", i, r.Hits[0])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	mfs, _ := f.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "embedfleet_serve_batch_images" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleSum() != 24 || h.GetSampleCount() >= 24 {
				t.Fatalf("batches: %d calls for %v images, want fewer calls than images", h.GetSampleCount(), h.GetSampleSum())
			}
			t.Logf("24 uploads in %d inference calls", h.GetSampleCount())
			return
		}
	}
	t.Fatal("no embedfleet_serve_batch_images metric")
}

// TestMilvusDown: with Milvus stopped, searches answer 503 and /readyz is
// not ready; liveness stays up.
func TestMilvusDown(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{Timeout: 10 * time.Second})
	f.mv.Stop()
	if a := post(t, f, "model=clip-vit-b32", f.photos[0]); a.status != http.StatusServiceUnavailable || !strings.Contains(a.err, "milvus") {
		t.Fatalf("search with Milvus down: %d %q, want 503 naming milvus", a.status, a.err)
	}
	for path, want := range map[string]int{"/readyz": 503, "/healthz": 200} {
		res, err := http.Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want)
		}
	}
}

// uploadsInFlight reads the server's embedfleet_serve_uploads_in_flight gauge.
func uploadsInFlight(t *testing.T, f *fixture) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "embedfleet_serve_uploads_in_flight" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no embedfleet_serve_uploads_in_flight metric")
	return 0
}

// TestLoadShedding: with one upload slot, an upload still arriving holds
// it; another upload gets 503 with Retry-After at once (memory stays
// bounded), searches by object still work, and once the slow upload ends
// uploads are taken again.
func TestLoadShedding(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{MaxInFlight: 1})
	pr, pw := io.Pipe()
	// Cleanups run last-in first-out: if the test stops early, this ends
	// the slow upload before the server's Close waits for it.
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) })
	type result struct {
		res *http.Response
		err error
	}
	slow := make(chan result, 1)
	go func() { // no t.Fatal off the test's goroutine: hand the result over
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/search?model=clip-vit-b32&k=1", pr)
		res, err := http.DefaultClient.Do(req)
		slow <- result{res, err}
	}()
	photo := f.photos[2]
	if _, err := pw.Write(photo[:100]); err != nil {
		t.Fatal(err)
	}
	// Wait until the slow upload's handler holds the slot. (Sending the
	// second upload before that lets it take the slot first; the slow one
	// is then turned away, and the server waits for the rest of its body.)
	deadline := time.Now().Add(10 * time.Second)
	for uploadsInFlight(t, f) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slow upload never took the upload slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/search?model=clip-vit-b32&k=1", bytes.NewReader(photo))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "busy: 1 uploads in flight") {
		t.Fatalf("a second upload while the slot is held: %d %v %s, want 503 with Retry-After and the reason", res.StatusCode, res.Header, body)
	}
	if a := get(t, f, "/v1/search?model=clip-vit-b32&k=1&uri=s3://photos/p05.jpg"); a.status != http.StatusOK {
		t.Fatalf("search by object while uploads are full: %d %s", a.status, a.err)
	}
	if _, err := pw.Write(photo[100:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-slow
	if r.err != nil {
		t.Fatal(r.err)
	}
	var resp httpapi.Response
	err = json.NewDecoder(r.res.Body).Decode(&resp)
	r.res.Body.Close()
	if r.res.StatusCode != http.StatusOK || err != nil || resp.Hits[0].URI != "s3://photos/p02.jpg" {
		t.Fatalf("the slow upload: %d %v %+v", r.res.StatusCode, err, resp.Hits)
	}
	if a := post(t, f, "model=clip-vit-b32&k=1", photo); a.status != http.StatusOK {
		t.Fatalf("an upload after the slot came free: %d %s", a.status, a.err)
	}
}
