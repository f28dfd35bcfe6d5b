package search_test

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// TestEmbedBatchMatchesOneByOne runs real ONNX Runtime on the tiny CLIP and
// DINOv2 exports: every image that EmbedBatch embeds in batches (odd sizes,
// a batch split across calls) must equal Embed's one-at-a-time vector, and
// broken images fail alone without shifting the others.
func TestEmbedBatchMatchesOneByOne(t *testing.T) {
	if _, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatalf("onnx runtime: %v", err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	var images [][]byte
	broken := map[int]bool{3: true, 8: true}
	for i := range 11 {
		b := testimages.JPEG(testimages.Photo(r, 40, 300), 90)
		switch i {
		case 3:
			b = b[:len(b)/3] // truncated
		case 8:
			b = []byte("not an image at all")
		}
		images = append(images, b)
	}
	s := search.New(nil, imageprep.Limits{})
	for _, name := range []string{"clip-vit-b32", "dinov2-base"} {
		m, err := embed.Open(filepath.Join("..", "embed", "testdata", "models", name), embed.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		defer m.Close()
		for _, batch := range []int{1, 4, 32} {
			vecs, errs := s.EmbedBatch(m, images, batch)
			if len(vecs) != len(images) || len(errs) != len(images) {
				t.Fatalf("%s batch %d: %d vectors and %d errors for %d images", name, batch, len(vecs), len(errs), len(images))
			}
			for i, img := range images {
				if broken[i] {
					if errs[i] == nil || vecs[i] != nil {
						t.Errorf("%s batch %d: broken image %d: err=%v vector=%v", name, batch, i, errs[i], vecs[i] != nil)
					}
					continue
				}
				if errs[i] != nil {
					t.Fatalf("%s batch %d: image %d: %v", name, batch, i, errs[i])
				}
				want, err := s.Embed(m, img)
				if err != nil {
					t.Fatal(err)
				}
				if len(vecs[i]) != m.Spec().Dim {
					t.Fatalf("%s: vector %d has %d dims, want %d", name, i, len(vecs[i]), m.Spec().Dim)
				}
				var dot float64
				for j := range want {
					dot += float64(want[j]) * float64(vecs[i][j])
				}
				if math.Abs(dot-1) > 1e-5 {
					t.Errorf("%s batch %d: image %d: cosine to the one-at-a-time vector %.7f", name, batch, i, dot)
				}
			}
		}
	}
}

// TestCollectionCacheFollowsARecreatedCollection: the Searcher remembers a
// model's collection between queries; when the collection is dropped and
// made again with another dimension, at most one query fails before the
// new one is found.
func TestCollectionCacheFollowsARecreatedCollection(t *testing.T) {
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr, CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	spec, _ := embed.Builtin("clip-vit-b32")
	spec.Name, spec.Version = testenv.Name(t, "m"), "sha256:aaa"
	put := func(dim int, uri string) []float32 {
		spec.Dim = dim
		col, err := st.Ensure(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]float32, dim)
		v[0] = 1
		if err := col.Upsert(ctx, []vecstore.Row{{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: v}}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	s := search.New(st, imageprep.Limits{})
	v8 := put(8, "s3://b/eight")
	for range 2 {
		if hits, err := s.ByVector(ctx, spec.Name, v8, 1); err != nil || hits[0].URI != "s3://b/eight" {
			t.Fatalf("8-d search: %+v %v", hits, err)
		}
	}
	if err := mv.Client.DropCollection(ctx, milvusclient.NewDropCollectionOption(vecstore.CollectionName(spec.Name))); err != nil {
		t.Fatal(err)
	}
	v4 := put(4, "s3://b/four")
	var hits []search.Hit
	for attempt := 1; ; attempt++ {
		hits, err = s.ByVector(ctx, spec.Name, v4, 1)
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("the new collection is still not found after %d queries: %v", attempt, err)
		}
		t.Logf("query %d on the stale collection: %v", attempt, err)
	}
	if hits[0].URI != "s3://b/four" {
		t.Fatalf("4-d search: %+v", hits)
	}
}
