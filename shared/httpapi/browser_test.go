package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/httpapi"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// hostileKey is an object key that would run script if a page pasted it
// into HTML.
const hostileKey = `imgs/<script>alert(1)</script>"onerror=alert(2) x.jpg`

// pageFixture: real MinIO holding photos (one under a hostile key), real
// milvus-lite holding their CLIP vectors, and the server over both.
type pageFixture struct {
	srv    *httptest.Server
	api    *httpapi.Server
	bucket string
	photos map[string][]byte // key -> bytes
	keys   []string
	reads  atomic.Int64 // objects read by the server
	reg    *prometheus.Registry
}

func newPageFixture(t *testing.T, n int, cfg httpapi.Config) *pageFixture {
	t.Helper()
	if _, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatal(err)
	}
	models := filepath.Join("..", "embed", "testdata", "models")
	clip, err := embed.Open(filepath.Join(models, "clip-vit-b32"), embed.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clip.Close() })
	text, err := embed.OpenText(filepath.Join(models, "clip-vit-b32-text"), embed.Options{IntraOpThreads: 1, TokenizerDir: testenv.CLIPVocab(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { text.Close() })
	mio := testenv.StartMinIO(t)
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := &pageFixture{bucket: mio.Bucket, photos: map[string][]byte{}}
	r := rand.New(rand.NewPCG(9, 9))
	for i := range n {
		key := fmt.Sprintf("imgs/p%03d.jpg", i)
		if i == 1 {
			key = hostileKey
		}
		b := testimages.JPEG(testimages.Photo(r, 120, 360), 90)
		if _, err := mio.Client.PutObject(ctx, mio.Bucket, key, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		f.photos[key], f.keys = b, append(f.keys, key)
	}
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr, CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(context.Background()) })
	eng, err := engine.New(engine.Options{}, []engine.ImageEncoder{clip}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	col, err := st.Ensure(ctx, clip.Spec())
	if err != nil {
		t.Fatal(err)
	}
	var rows []vecstore.Row
	for _, key := range f.keys {
		v, err := eng.EmbedImage(ctx, clip.Spec().Name, f.photos[key])
		if err != nil {
			t.Fatal(err)
		}
		uri := f.uri(key)
		rows = append(rows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: v})
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	objects := objstore.NewObjects(objstore.S3Config{Endpoint: mio.Endpoint, Insecure: true, PathStyle: true,
		AccessKey: mio.AccessKey, SecretKey: mio.SecretKey})
	cfg.Store, cfg.Models, cfg.TextModels = st, []engine.ImageEncoder{clip}, []engine.TextEncoder{text}
	if cfg.Registry == nil {
		reg := prometheus.NewRegistry()
		cfg.Registry = reg
		if cfg.Metrics != nil {
			cfg.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		}
	}
	f.reg = cfg.Registry.(*prometheus.Registry)
	cfg.ReadObject = func(ctx context.Context, uri string, max int64) ([]byte, error) {
		f.reads.Add(1)
		return objects.Get(ctx, uri, max)
	}
	f.api, err = httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.api)
	t.Cleanup(func() { f.srv.Close(); f.api.Close() })
	return f
}

func (f *pageFixture) uri(key string) string { return "s3://" + f.bucket + "/" + key }

// browser starts headless Chromium (Debian's) and gathers every JavaScript
// exception, console error and browser log error but failed network loads
// (a 4xx the page shows as a message): problems() returns them.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	bin := testenv.Binary(t, testenv.EnvChromiumBin)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelA)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(cancelB)
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("chromium %s: %v", bin, err)
	}
	return bctx, watchConsole(bctx)
}

func watchConsole(ctx context.Context) func() []string {
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				mu.Lock()
				problems = append(problems, string(m.Type)+" "+m.Source+": "+m.Text)
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))
}

func run[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T], problems func() []string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v (page problems: %q)", what, err, problems())
	}
	return v
}

func steps(t *testing.T, ctx context.Context, what string, problems func() []string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v (page problems: %q)", what, err, problems())
	}
}

const statusHas = `document.getElementById("status").textContent.includes(%q)`

// TestSearchPage drives the page in a real browser: it loads with the
// models, a resized copy finds its original first, a text search answers,
// "More like this" searches by a result, a non-image upload is a readable
// error, a hostile key renders as text, the page fits a phone, 50 loads at
// once all render, and no JavaScript error happens anywhere.
func TestSearchPage(t *testing.T) {
	f := newPageFixture(t, 24, httpapi.Config{})
	ctx, problems := browser(t)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "copy.jpg")
	r := rand.New(rand.NewPCG(9, 9))
	orig := testimages.Photo(r, 120, 360) // the first photo, drawn again
	os.WriteFile(copyPath, testimages.JPEG(testimages.Scale(orig, 0.8), 70), 0o644)
	notImage := filepath.Join(dir, "notes.txt")
	os.WriteFile(notImage, []byte("these are not pixels"), 0o644)

	steps(t, ctx, "load the page", problems,
		chromedp.Navigate(f.srv.URL+"/"),
		poll(`document.querySelectorAll("#model option").length > 0`),
		poll(`!document.getElementById("text-form").hidden`), // the CLIP model has a text tower
		// A resized, re-encoded copy of the first photo.
		chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{copyPath}),
		poll(fmt.Sprintf(statusHas, "copy.jpg")))
	if first := run(t, ctx, "first result", chromedp.Text(chromedp.CSS(`#results .result .uri`)), problems); first != f.uri(f.keys[0]) {
		t.Errorf("a copy of %s found %s first", f.uri(f.keys[0]), first)
	}

	// By text, then "More like this" on the first result.
	steps(t, ctx, "search by text", problems,
		chromedp.SetValue(chromedp.CSS(`#text`), "a photo of a cat"),
		chromedp.Click(chromedp.CSS(`#text-search`)),
		poll(fmt.Sprintf(statusHas, "a photo of a cat")))
	if n := run(t, ctx, "count", chromedp.Evaluate[int](`document.querySelectorAll("#results .result").length`), problems); n != 12 {
		t.Errorf("text search showed %d results, want the default 12", n)
	}
	firstID := run(t, ctx, "first id", chromedp.AttributeValue(chromedp.CSS(`#results .result`), "data-id"), problems).Value
	steps(t, ctx, "more like this", problems,
		chromedp.Click(chromedp.CSS(`#results .result .more`)),
		poll(fmt.Sprintf(statusHas, "the result #1")))
	if again := run(t, ctx, "first id again", chromedp.AttributeValue(chromedp.CSS(`#results .result`), "data-id"), problems).Value; again != firstID {
		t.Errorf("more like this on %s ranked %s first", firstID, again)
	}

	// The hostile key: its copy is found, and its name is text.
	hostileCopy := filepath.Join(dir, "hostile.jpg")
	os.WriteFile(hostileCopy, f.photos[hostileKey], 0o644)
	steps(t, ctx, "search by the hostile object", problems,
		chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{hostileCopy}),
		poll(fmt.Sprintf(statusHas, "hostile.jpg")))
	hostileText := run(t, ctx, "hostile uri", chromedp.Text(chromedp.CSS(`#results .result .uri`)), problems)
	scripts := run(t, ctx, "scripts", chromedp.Evaluate[int](`document.querySelectorAll("#results script").length`), problems)
	handlers := run(t, ctx, "handlers", chromedp.Evaluate[int](`[...document.querySelectorAll("#results *")].filter(e => e.hasAttribute("onerror")).length`), problems)
	if hostileText != f.uri(hostileKey) || scripts != 0 || handlers != 0 {
		t.Errorf("hostile key shown as %q with %d script elements and %d onerror attributes", hostileText, scripts, handlers)
	}

	// A file that is not an image: the API's message, as an error.
	steps(t, ctx, "upload a text file", problems,
		chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{notImage}),
		poll(`document.getElementById("status").className === "error"`))
	if msg := run(t, ctx, "status", chromedp.Text(chromedp.CSS(`#status`)), problems); !strings.Contains(msg, "not an image") && !strings.Contains(msg, "unsupported") {
		t.Errorf("non-image upload shows %q", msg)
	}

	// Thumbnails load; a screenshot; at phone width nothing overflows.
	// With the keyboard alone: type into the text box and press Enter.
	steps(t, ctx, "search for the screenshot", problems,
		chromedp.Evaluate[chromedp.Void](`document.getElementById("text").value = ""`),
		chromedp.SendKeys(chromedp.CSS(`#text`), "a red car\r"),
		poll(fmt.Sprintf(statusHas, "a red car")),
		poll(`[...document.querySelectorAll("#results img")].every(i => i.complete && i.naturalWidth > 0)`))
	shot := run(t, ctx, "screenshot", chromedp.FullScreenshot(85), problems)
	out := os.Getenv("EMBEDFLEET_SCREENSHOT_DIR")
	if out == "" {
		out = t.TempDir()
	}
	os.WriteFile(filepath.Join(out, "search-page.jpg"), shot, 0o644)
	steps(t, ctx, "phone width", problems, chromedp.EmulateViewport(390, 844))
	if run(t, ctx, "overflow", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`), problems) {
		t.Error("the page scrolls sideways at 390 px")
	}

	// 50 page loads at once, ten tabs at a time.
	var ok atomic.Int32
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tab, cancel := chromedp.NewContext(ctx)
			defer cancel()
			tabProblems := watchConsole(tab)
			err := chromedp.Do(tab, chromedp.Navigate(f.srv.URL+"/"), poll(`document.querySelectorAll("#model option").length > 0`))
			n, err2 := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll("#model option").length`))
			if err == nil && err2 == nil && n == 1 && len(tabProblems()) == 0 {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 50 {
		t.Errorf("%d of 50 concurrent page loads rendered without errors", ok.Load())
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page had errors: %q", p)
	}
}

// TestThumbnails: 1,000 distinct thumbnails (100 objects, 10 sizes) pass
// through a cache that never holds more than its limit; a thumbnail is a
// JPEG no larger than asked, with an ETag that a revalidation honours; an
// id that is not in the collection is 404 and reads no object.
func TestThumbnails(t *testing.T) {
	const limit = 200 << 10
	f := newPageFixture(t, 100, httpapi.Config{ThumbnailCacheBytes: limit})
	ids := make([]string, len(f.keys))
	for i, k := range f.keys {
		ids[i] = vecstore.ID(f.uri(k))
	}
	peak := int64(0)
	for _, size := range []int{32, 48, 64, 80, 96, 128, 160, 200, 256, 320} {
		for _, id := range ids {
			res, err := http.Get(fmt.Sprintf("%s/v1/thumbnail?model=clip-vit-b32&id=%s&size=%d", f.srv.URL, id, size))
			if err != nil {
				t.Fatal(err)
			}
			var body bytes.Buffer
			body.ReadFrom(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/jpeg" || res.Header.Get("ETag") == "" {
				t.Fatalf("thumbnail %s@%d: %d %s %q", id, size, res.StatusCode, res.Header.Get("Content-Type"), body.String())
			}
			peak = max(peak, f.api.ThumbnailCacheBytes())
		}
	}
	if peak > limit || peak == 0 {
		t.Fatalf("the thumbnail cache held %d bytes at most, limit %d", peak, limit)
	}
	t.Logf("1000 thumbnails, cache peak %d bytes of %d, %d objects read", peak, limit, f.reads.Load())
	// Revalidation: 304 without reading the object again.
	u := fmt.Sprintf("%s/v1/thumbnail?model=clip-vit-b32&id=%s&size=64", f.srv.URL, ids[3])
	res, _ := http.Get(u)
	etag := res.Header.Get("ETag")
	res.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("If-None-Match", etag)
	before := f.reads.Load()
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusNotModified || f.reads.Load() != before {
		t.Fatalf("revalidation: %v %d, %d reads", err, res.StatusCode, f.reads.Load()-before)
	}
	res.Body.Close()
	// Not in the collection, or not an id at all: 404, no object read.
	before = f.reads.Load()
	for _, id := range []string{vecstore.ID("s3://" + f.bucket + "/imgs/never-indexed.jpg"), "../../etc/passwd", "x' or '1'='1"} {
		res, err := http.Get(f.srv.URL + "/v1/thumbnail?model=clip-vit-b32&size=64&id=" + strings.ReplaceAll(id, " ", "%20"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("id %q: %d, want 404", id, res.StatusCode)
		}
	}
	if n := f.reads.Load() - before; n != 0 {
		t.Errorf("unknown ids read %d objects", n)
	}
	// The original, under its own type.
	res, err = http.Get(fmt.Sprintf("%s/v1/original?model=clip-vit-b32&id=%s", f.srv.URL, ids[5]))
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/jpeg" || !bytes.Equal(body.Bytes(), f.photos[f.keys[5]]) {
		t.Fatalf("original: %d %s, %d bytes", res.StatusCode, res.Header.Get("Content-Type"), body.Len())
	}
	// Thumbnails and originals are requests like any other: counted, and
	// timed.
	for _, c := range []struct {
		route, code string
		want        float64
	}{{"thumbnail", "200", 1001}, {"thumbnail", "304", 1}, {"thumbnail", "404", 3}, {"original", "200", 1}} {
		if got := counter(t, f.reg, c.route, c.code); got != c.want {
			t.Errorf("requests{route=%s,code=%s} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
	// A client's value comes back clipped: a 10,000-character id is not
	// echoed whole.
	long := strings.Repeat("a", 10000)
	for _, route := range []string{"thumbnail", "original"} {
		res, err := http.Get(f.srv.URL + "/v1/" + route + "?model=clip-vit-b32&id=" + long)
		if err != nil {
			t.Fatal(err)
		}
		body.Reset()
		body.ReadFrom(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound || body.Len() > 400 {
			t.Errorf("%s of a 10,000-character id: %d, %d bytes: %.300s", route, res.StatusCode, body.Len(), body.String())
		}
	}
}

// counter reads embedfleet_http_requests_total{route, code}.
func counter(t *testing.T, reg *prometheus.Registry, route, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "embedfleet_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestAuthToken: with a token every API route needs it (compared in
// constant time), the page and health checks do not, and every answer
// carries the security headers.
func TestAuthToken(t *testing.T) {
	// Metrics set: the fixture serves its registry at /metrics.
	f := newPageFixture(t, 4, httpapi.Config{AuthToken: "s3cret-token-0123456789", Metrics: http.NotFoundHandler()})
	get := func(path, token string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
		if scheme, tok, ok := strings.Cut(token, " "); ok {
			req.Header.Set("Authorization", scheme+" "+tok) // a scheme of its own
		} else if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/", "", 200}, {"/static/app.js", "", 200}, {"/healthz", "", 200},
		{"/v1/models", "", 401}, {"/v1/models", "wrong", 401}, {"/v1/models", "s3cret-token-0123456789", 200},
		{"/v1/search?model=clip-vit-b32&text=cat", "", 401},
		{"/v1/thumbnail?model=clip-vit-b32&id=" + vecstore.ID(f.uri(f.keys[0])), "", 401},
		{"/v1/original?model=clip-vit-b32&id=" + vecstore.ID(f.uri(f.keys[0])), "", 401},
		{"/metrics", "", 401}, {"/metrics", "wrong", 401}, {"/metrics", "s3cret-token-0123456789", 200},
		// The scheme is case-insensitive (RFC 9110); the token is not.
		{"/v1/models", "bearer s3cret-token-0123456789", 200}, {"/v1/models", "BEARER s3cret-token-0123456789", 200},
		{"/v1/models", "Basic s3cret-token-0123456789", 401}, {"/v1/models", "Bearer S3CRET-TOKEN-0123456789", 401},
		{"/v1/nothing-here", "", 401},
	} {
		res := get(c.path, c.token)
		if res.StatusCode != c.want {
			t.Errorf("%s with %q: %d, want %d", c.path, c.token, res.StatusCode, c.want)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", c.path, csp)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", c.path)
		}
	}
	// Every refused request is counted, by its route ("other" for a path
	// the server does not serve, so no client makes labels up).
	res, _ := http.DefaultClient.Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer s3cret-token-0123456789")
		return req
	}())
	var body bytes.Buffer
	body.ReadFrom(res.Body)
	res.Body.Close()
	for _, want := range []string{`route="models"} 4`, `route="metrics"} 2`, `route="thumbnail"} 1`, `route="original"} 1`, `route="search_object"} 1`, `route="other"} 1`} {
		if !strings.Contains(body.String(), `embedfleet_http_requests_total{code="401",`+want) {
			t.Errorf("/metrics lacks the count of 401s %s:\n%s", want, grep(body.String(), "embedfleet_http_requests_total"))
		}
	}
}

// grep keeps the lines of s that hold sub.
func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSearchPrefix: ?prefix= answers only with rows under it, matched
// exactly even when it holds LIKE wildcards or quotes.
func TestSearchPrefix(t *testing.T) {
	f := newPageFixture(t, 12, httpapi.Config{})
	for _, c := range []struct {
		prefix string
		want   int // hits under it
	}{
		{f.uri("imgs/p00"), 9}, // p000, p002..p009 (p001 is the hostile key)
		{f.uri("imgs/p01"), 2},
		{f.uri("imgs/p0%"), 0},
		{f.uri("imgs/p00_"), 0},
		{f.uri("imgs/<script>"), 1},
		{f.uri(`imgs/p00' || uri like '%`), 0},
	} {
		res, err := http.Get(f.srv.URL + "/v1/search?model=clip-vit-b32&k=50&text=cat&prefix=" + url.QueryEscape(c.prefix))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Hits []struct{ URI string } `json:"hits"`
		}
		err = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("prefix %q: %d %v", c.prefix, res.StatusCode, err)
		}
		for _, h := range body.Hits {
			if !strings.HasPrefix(h.URI, c.prefix) {
				t.Errorf("prefix %q answered %s", c.prefix, h.URI)
			}
		}
		if len(body.Hits) != c.want {
			t.Errorf("prefix %q: %d hits, want %d", c.prefix, len(body.Hits), c.want)
		}
		// The copy check takes the same prefix ("Only under" on the page).
		res, err = http.Get(f.srv.URL + "/v1/copies?model=clip-vit-b32&k=50&uri=" + url.QueryEscape(f.uri(f.keys[5])) + "&prefix=" + url.QueryEscape(c.prefix))
		if err != nil {
			t.Fatal(err)
		}
		var cp struct {
			Matches []struct{ URI string } `json:"matches"`
		}
		err = json.NewDecoder(res.Body).Decode(&cp)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("copies, prefix %q: %d %v", c.prefix, res.StatusCode, err)
		}
		for _, m := range cp.Matches {
			if !strings.HasPrefix(m.URI, c.prefix) {
				t.Errorf("copies, prefix %q, answered %s", c.prefix, m.URI)
			}
		}
		if wantCopies := c.want - btoi(strings.HasPrefix(f.uri(f.keys[5]), c.prefix)); len(cp.Matches) != wantCopies {
			t.Errorf("copies, prefix %q: %d matches, want %d", c.prefix, len(cp.Matches), wantCopies)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestCopiesView: "Find copies of it instead" sends an upload to
// /v1/copies and "Copies of this" a result; the page shows each candidate's
// verdict and says whether the scores are normalised.
func TestCopiesView(t *testing.T) {
	f := newPageFixture(t, 16, httpapi.Config{})
	ctx, problems := browser(t)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(9, 9))
	orig := testimages.Photo(r, 120, 360) // the first photo, drawn again
	copyPath := filepath.Join(t.TempDir(), "copy.jpg")
	os.WriteFile(copyPath, testimages.JPEG(testimages.Scale(orig, 0.8), 70), 0o644)
	steps(t, ctx, "upload in copies mode", problems,
		chromedp.Navigate(f.srv.URL+"/"),
		poll(`document.querySelectorAll("#model option").length > 0`),
		chromedp.Click(chromedp.CSS(`#copies-mode`)),
		chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{copyPath}),
		poll(fmt.Sprintf(statusHas, "candidates are copies of the image copy.jpg")))
	msg := run(t, ctx, "status", chromedp.Text(chromedp.CSS(`#status`)), problems)
	first := run(t, ctx, "first", chromedp.Text(chromedp.CSS(`#results .result .uri`)), problems)
	tiers := run(t, ctx, "tiers", chromedp.Evaluate[int](`document.querySelectorAll("#results .result .tier").length`), problems)
	cards := run(t, ctx, "cards", chromedp.Evaluate[int](`document.querySelectorAll("#results .result").length`), problems)
	if !strings.Contains(msg, "raw cosines") || first != f.uri(f.keys[0]) || tiers != cards || cards != 12 {
		t.Errorf("copies of an upload: status %q, first %s, %d verdicts on %d cards", msg, first, tiers, cards)
	}
	firstID := run(t, ctx, "first id", chromedp.AttributeValue(chromedp.CSS(`#results .result`), "data-id"), problems).Value
	steps(t, ctx, "copies of a result", problems,
		chromedp.Click(chromedp.CSS(`#results .result .copies`)),
		poll(fmt.Sprintf(statusHas, "candidates are copies of the result #1")))
	ids := run(t, ctx, "ids", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#results .result")].map(e => e.dataset.id)`), problems)
	if len(ids) == 0 || slices.Contains(ids, firstID) {
		t.Errorf("copies of %s: %v (a row is not its own copy)", firstID, ids)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page had errors: %q", p)
	}
}
