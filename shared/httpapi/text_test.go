package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/httpapi"
)

// nearest returns the URI of the indexed photo nearest to v, by brute force.
func (f *fixture) nearest(v []float32) string {
	best, at := -2.0, -1
	for i, iv := range f.vecs {
		if c := embed.Cosine(v, iv); c > best {
			best, at = c, i
		}
	}
	return fmt.Sprintf("s3://photos/p%02d.jpg", at)
}

// TestTextSearch: GET /v1/search?text= embeds the text with the CLIP text
// tower and searches the CLIP collection; its top hit is the brute-force
// nearest photo to the text's vector, by either model name, and concurrent
// text queries share inference calls.
func TestTextSearch(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{Linger: 20 * time.Millisecond, MaxBatch: 8})
	e, err := engine.New(engine.Options{}, nil, []engine.TextEncoder{f.text})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	texts := []string{"a photo of a cat", "two dogs in the snow", "Ein Hund", "一只猫", "sunset 🌅", "<|endoftext|>", "DON'T", "x"}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := texts[i%len(texts)]
			model := []string{"clip-vit-b32", "clip-vit-b32-text"}[i%2]
			a := get(t, f, "/v1/search?k=3&model="+model+"&text="+url.QueryEscape(q))
			if a.status != http.StatusOK {
				t.Errorf("%q: %d %s", q, a.status, a.err)
				return
			}
			v, err := e.EmbedText(context.Background(), "clip-vit-b32-text", q)
			if err != nil {
				t.Error(err)
				return
			}
			if want := f.nearest(v); a.resp.Hits[0].URI != want || a.resp.Model != "clip-vit-b32" {
				t.Errorf("%q via %s: top hit %s in %s, brute force says %s", q, model, a.resp.Hits[0].URI, a.resp.Model, want)
			}
		}()
	}
	wg.Wait()
	mfs, _ := f.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "embedfleet_serve_batch_images" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "clip-vit-b32-text" {
				h := m.GetHistogram()
				if h.GetSampleSum() != 16 || h.GetSampleCount() >= 16 {
					t.Fatalf("text batches: %d calls for %v texts, want fewer calls than texts", h.GetSampleCount(), h.GetSampleSum())
				}
				t.Logf("16 text queries in %d inference calls", h.GetSampleCount())
				return
			}
		}
	}
	t.Fatal("no batch histogram for the text model")
}

// TestTextBadRequests: every bad text query gets a 4xx that says why.
func TestTextBadRequests(t *testing.T) {
	t.Parallel()
	f := setup(t, httpapi.Config{MaxTextBytes: 100})
	for _, c := range []struct {
		name, query string
		status      int
		says        string
	}{
		{"empty", "model=clip-vit-b32&text=", 400, "empty"},
		{"white space", "model=clip-vit-b32&text=%20%09", 400, "white space"},
		{"not UTF-8", "model=clip-vit-b32&text=%FF%FE", 400, "UTF-8"},
		{"too long", "model=clip-vit-b32&text=" + strings.Repeat("a", 101), 400, "limit"},
		{"text and uri", "model=clip-vit-b32&text=cat&uri=s3://photos/p01.jpg", 400, "one of them"},
		{"no text tower", "model=dinov2-base&text=cat", 404, "no text model"},
		{"unknown model", "model=nope&text=cat", 404, "not served"},
	} {
		a := get(t, f, "/v1/search?"+c.query)
		if a.status != c.status || !strings.Contains(a.err, c.says) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, a.status, a.err, c.status, c.says)
		}
	}
	if a := get(t, f, "/v1/search?model=clip-vit-b32&text=a+cat"); a.status != 200 {
		t.Fatalf("after the bad requests: %d %s", a.status, a.err)
	}
}
