package imageprep_test

import (
	"bytes"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

// TestJPEGDraft: with WithJPEGDraft a large JPEG decodes at the smallest
// DCT scaling whose shorter side still covers the target, the model's
// tensor stays close to the exact one, and a PNG decodes as without it.
func TestJPEGDraft(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	// A 12 MP photo: 4000x3000.
	big := testimages.Scale(testimages.Photo(r, 400, 401).SubImage(image.Rect(0, 0, 400, 300)), 10)
	data := testimages.JPEG(big, 90)
	w, h := big.Bounds().Dx(), big.Bounds().Dy()
	for _, c := range []struct{ short, scale int }{{224, 8}, {256, 8}, {400, 4}, {1000, 2}, {2000, 1}, {0, 1}} {
		dec := imageprep.NewDecoder(imageprep.Limits{}, imageprep.WithJPEGDraft(c.short))
		img, info, err := dec.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if wantW, wantH := (w+c.scale-1)/c.scale, (h+c.scale-1)/c.scale; img.Width != wantW || img.Height != wantH {
			t.Errorf("draft %d: decoded %dx%d, want %dx%d (1/%d)", c.short, img.Width, img.Height, wantW, wantH, c.scale)
		}
		if info.Width != w || info.Height != h {
			t.Errorf("draft %d: info says %dx%d, want the stored %dx%d", c.short, info.Width, info.Height, w, h)
		}
	}
	for _, p := range []imageprep.Params{imageprep.CLIP, imageprep.DINOv2} {
		exact, fast := tensor(t, data, p), tensor(t, data, p, imageprep.WithJPEGDraft(p.ShortestEdge))
		if cos := cosine(exact, fast); cos < 0.99 {
			t.Errorf("shortest edge %d: tensor cosine fast vs exact %.5f, want >= 0.99", p.ShortestEdge, cos)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, testimages.Photo(r, 600, 601)); err != nil {
		t.Fatal(err)
	}
	a, b := tensor(t, buf.Bytes(), imageprep.CLIP), tensor(t, buf.Bytes(), imageprep.CLIP, imageprep.WithJPEGDraft(224))
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("a PNG decodes differently with a JPEG draft (value %d)", i)
		}
	}
}

func tensor(t *testing.T, data []byte, p imageprep.Params, opts ...imageprep.DecoderOption) []float32 {
	t.Helper()
	img, _, err := imageprep.NewDecoder(imageprep.Limits{}, opts...).Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := imageprep.NewPreprocessor(p)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, pp.Size())
	if err := pp.Run(img, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}
