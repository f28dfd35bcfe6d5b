package embed_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

type textFixtures struct {
	Version   string         `json:"version"`
	PairsWith embed.ModelRef `json:"pairs_with"`
	Cases     []struct {
		Text      string    `json:"text"`
		Embedding []float64 `json:"embedding"`
		TopImage  string    `json:"top_image"`
	} `json:"cases"`
}

func openTextModel(t *testing.T) *embed.TextModel {
	t.Helper()
	initRuntime(t)
	m, err := embed.OpenText(filepath.Join("testdata", "models", "clip-vit-b32-text"),
		embed.Options{IntraOpThreads: 1, TokenizerDir: testenv.CLIPVocab(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestTextParity: the text tower's vectors through cliptok and ONNX Runtime
// equal PyTorch's get_text_features on CLIPTokenizerFast's ids, and each
// caption's nearest fixture image (by the image tower's vectors) is
// PyTorch's.
func TestTextParity(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "text_embeddings.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx textFixtures
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	m := openTextModel(t)
	img := openModel(t, "clip-vit-b32")
	if m.Spec().Version != fx.Version {
		t.Fatalf("text model version %s, fixtures made with %s", m.Spec().Version, fx.Version)
	}
	if err := embed.CheckPair(m.Spec(), img.Spec()); err != nil {
		t.Fatal(err)
	}
	imgs := loadEmbeddingFixtures(t).Models["clip-vit-b32"].Cases
	var paths []string
	for _, c := range imgs {
		paths = append(paths, filepath.Join("..", "imageprep", "testdata", "images", c.Image))
	}
	ivecs := embedFiles(t, img, paths)
	n, ctx, dim := len(fx.Cases), m.InputSize(), m.Spec().Dim
	ids := make([]int64, n*ctx)
	for i, c := range fx.Cases {
		if err := m.Tokenize(c.Text, ids[i*ctx:(i+1)*ctx]); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]float32, n*dim)
	if err := m.Embed(ids, n, out); err != nil {
		t.Fatal(err)
	}
	minCos := 1.0
	for i, c := range fx.Cases {
		v := out[i*dim : (i+1)*dim]
		ref := make([]float32, dim)
		for j, x := range c.Embedding {
			ref[j] = float32(x)
		}
		cos := embed.Cosine(v, ref)
		minCos = min(minCos, cos)
		if cos < 0.99999 {
			t.Errorf("%q: cosine %.7f with PyTorch, want >= 0.99999", c.Text, cos)
		}
		best, top := -2.0, ""
		for k, iv := range ivecs {
			if s := embed.Cosine(v, iv); s > best {
				best, top = s, imgs[k].Image
			}
		}
		if top != c.TopImage {
			t.Errorf("%q: nearest image %s, PyTorch's %s", c.Text, top, c.TopImage)
		}
	}
	t.Logf("min cosine with PyTorch %.7f over %d captions", minCos, n)
}

func TestTextModelErrors(t *testing.T) {
	m := openTextModel(t)
	ids := make([]int64, m.InputSize())
	if err := m.Tokenize("\xff\xfe", ids); err == nil {
		t.Error("invalid UTF-8 was tokenised")
	}
	ids[3] = 1 << 40
	if err := m.Embed(ids, 1, make([]float32, m.Spec().Dim)); err == nil {
		t.Error("an id outside the vocabulary reached the model")
	}
	other := m.Spec()
	other.PairsWith = &embed.ModelRef{Name: "clip-vit-b32", Version: "sha256:00"}
	img := openModel(t, "clip-vit-b32")
	if err := embed.CheckPair(other, img.Spec()); !errors.Is(err, embed.ErrNotPaired) {
		t.Errorf("another version: %v, want ErrNotPaired", err)
	}
	if err := embed.CheckPair(m.Spec(), openModel(t, "dinov2-base").Spec()); !errors.Is(err, embed.ErrNotPaired) {
		t.Errorf("another model: %v, want ErrNotPaired", err)
	}
	// Without its tokenizer files the model does not open, and says where
	// they were looked for.
	initRuntime(t)
	_, err := embed.OpenText(filepath.Join("testdata", "models", "clip-vit-b32-text"), embed.Options{})
	if err == nil {
		t.Error("opened without a vocabulary")
	}
	if _, err := embed.OpenText(filepath.Join("testdata", "models", "clip-vit-b32"), embed.Options{}); !errors.Is(err, embed.ErrInvalidSpec) {
		t.Errorf("an image model opened as text: %v", err)
	}
	if _, err := embed.Open(filepath.Join("testdata", "models", "clip-vit-b32-text"), embed.Options{}); !errors.Is(err, embed.ErrInvalidSpec) {
		t.Errorf("a text model opened as image: %v", err)
	}
}
