package engine_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

func openModels(t *testing.T) []*embed.Model {
	t.Helper()
	if _, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatalf("onnx runtime: %v", err)
	}
	var ms []*embed.Model
	for _, name := range []string{"clip-vit-b32", "dinov2-base"} {
		m, err := embed.Open(filepath.Join("..", "embed", "testdata", "models", name), embed.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	return ms
}

// TestEmbedImagesMatchesOneByOne runs real ONNX Runtime on the tiny CLIP
// and DINOv2 exports: every image that EmbedImages embeds in batches (odd
// sizes, a batch split across calls) equals EmbedImage's one-at-a-time
// vector, comes out in order, and broken images fail alone without
// shifting the others.
func TestEmbedImagesMatchesOneByOne(t *testing.T) {
	ms := openModels(t)
	r := rand.New(rand.NewPCG(7, 7))
	var images [][]byte
	broken := map[int]bool{3: true, 8: true, 9: true}
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
	one, err := engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: 1}}, []engine.ImageEncoder{ms[0], ms[1]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	ctx := context.Background()
	for _, batch := range []int{1, 4, 32} {
		e, err := engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: batch}}, []engine.ImageEncoder{ms[0], ms[1]}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			name := m.Spec().Name
			next := 0
			err := e.EmbedImages(ctx, name, len(images), func(i int) ([]byte, error) {
				if i == 9 {
					return nil, errors.New("unreadable file")
				}
				return images[i], nil
			}, func(i int, v []float32, err error) error {
				if i != next {
					return fmt.Errorf("image %d emitted when %d was next", i, next)
				}
				next++
				if broken[i] {
					if err == nil || v != nil {
						t.Errorf("%s batch %d: broken image %d: err=%v vector=%v", name, batch, i, err, v != nil)
					}
					return nil
				}
				if err != nil {
					return fmt.Errorf("image %d: %w", i, err)
				}
				want, err := one.EmbedImage(ctx, name, images[i])
				if err != nil {
					return err
				}
				if len(v) != m.Spec().Dim {
					return fmt.Errorf("vector %d has %d dims, want %d", i, len(v), m.Spec().Dim)
				}
				if cos := embed.Cosine(want, v); math.Abs(cos-1) > 1e-5 {
					t.Errorf("%s batch %d: image %d: cosine to the one-at-a-time vector %.7f", name, batch, i, cos)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s batch %d: %v", name, batch, err)
			}
			if next != len(images) {
				t.Fatalf("%s batch %d: %d of %d images emitted", name, batch, next, len(images))
			}
		}
		e.Close()
	}
}

// TestEmbedImagesStops: an error from emit ends the call with it.
func TestEmbedImagesStops(t *testing.T) {
	ms := openModels(t)
	e, err := engine.New(engine.Options{}, []engine.ImageEncoder{ms[0]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	img := testimages.JPEG(testimages.Photo(rand.New(rand.NewPCG(1, 1)), 64, 65), 90)
	stop := errors.New("stop")
	seen := 0
	err = e.EmbedImages(context.Background(), "clip-vit-b32", 1000, func(int) ([]byte, error) { return img, nil },
		func(i int, _ []float32, _ error) error {
			seen++
			if i == 2 {
				return stop
			}
			return nil
		})
	if !errors.Is(err, stop) || seen != 3 {
		t.Fatalf("err %v after %d images, want stop after 3", err, seen)
	}
	if _, err := e.EmbedImage(context.Background(), "nope", img); !errors.Is(err, engine.ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
}

// TestPreparerDecodesOnceForEveryModel: Prepare writes each model's input
// from one decode, equal to preprocessing alone.
func TestPreparerDecodesOnceForEveryModel(t *testing.T) {
	ms := openModels(t)
	p, err := engine.NewPreparer(2, imageprep.Limits{}, nil, ms[0].Params(), ms[1].Params())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	data := testimages.JPEG(testimages.Photo(rand.New(rand.NewPCG(2, 2)), 300, 301), 90)
	dst := [][]float32{make([]float32, p.Size(0)), make([]float32, p.Size(1))}
	released := false
	w, h, err := p.Prepare(data, []int{0, 1}, dst, func() { released = true })
	if err != nil || w != 300 || h != 300 || !released {
		t.Fatalf("prepare: %dx%d %v released=%v", w, h, err, released)
	}
	for k, m := range ms {
		dec := imageprep.NewDecoder(imageprep.Limits{})
		img, _, _ := dec.Decode(data)
		pp, _ := imageprep.NewPreprocessor(m.Params())
		want := make([]float32, pp.Size())
		if err := pp.Run(img, want); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if want[i] != dst[k][i] {
				t.Fatalf("%s: value %d is %v, preprocessing alone gives %v", m.Spec().Name, i, dst[k][i], want[i])
			}
		}
	}
	if _, _, err := p.Prepare([]byte("junk"), []int{0}, dst[:1], nil); !errors.Is(err, imageprep.ErrUnsupported) {
		t.Fatalf("junk: %v, want ErrUnsupported", err)
	}
}

// TestFastDecodeIsClose: on a 12 MP JPEG, the vectors of --decode fast (a
// DCT-scaled decode fitted to the models' largest resize target) stay
// within cosine 0.99 of the exact ones, for both models at once.
func TestFastDecodeIsClose(t *testing.T) {
	ms := openModels(t)
	r := rand.New(rand.NewPCG(12, 12))
	data := testimages.JPEG(testimages.Scale(testimages.Photo(r, 400, 401).SubImage(image.Rect(0, 0, 400, 300)), 10), 90)
	encs := []engine.ImageEncoder{ms[0], ms[1]}
	exact, err := engine.New(engine.Options{}, encs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer exact.Close()
	fast, err := engine.New(engine.Options{FastDecode: true}, encs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for _, m := range ms {
		a, err := exact.EmbedImage(context.Background(), m.Spec().Name, data)
		if err != nil {
			t.Fatal(err)
		}
		b, err := fast.EmbedImage(context.Background(), m.Spec().Name, data)
		if err != nil {
			t.Fatal(err)
		}
		cos := embed.Cosine(a, b)
		t.Logf("%s: cosine fast vs exact %.6f", m.Spec().Name, cos)
		if cos < 0.99 {
			t.Errorf("%s: cosine fast vs exact %.5f, want >= 0.99", m.Spec().Name, cos)
		}
	}
}
