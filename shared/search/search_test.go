package search_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
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
