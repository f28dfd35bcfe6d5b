package embed_test

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

type embeddingFixtures struct {
	Models map[string]struct {
		Version string `json:"version"`
		Cases   []struct {
			Image     string    `json:"image"`
			Embedding []float64 `json:"embedding"`
		} `json:"cases"`
		SeedSimilarity struct {
			Cosine float64 `json:"cosine"`
			Score  float64 `json:"score"`
		} `json:"seed_similarity"`
	} `json:"models"`
}

func loadEmbeddingFixtures(t *testing.T) embeddingFixtures {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "embeddings.json"))
	if err != nil {
		t.Fatalf("%v (regenerate with `make fixtures`)", err)
	}
	var f embeddingFixtures
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Models) != 2 {
		t.Fatalf("fixtures hold %d models, want 2", len(f.Models))
	}
	return f
}

func openModel(t *testing.T, name string) *embed.Model {
	t.Helper()
	initRuntime(t)
	m, err := embed.Open(filepath.Join("testdata", "models", name), embed.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// embedFiles decodes, preprocesses and embeds files in one batch.
func embedFiles(t *testing.T, m *embed.Model, paths []string, opts ...imageprep.DecoderOption) [][]float32 {
	t.Helper()
	dec := imageprep.NewDecoder(imageprep.Limits{}, opts...)
	defer dec.Close()
	pp, err := imageprep.NewPreprocessor(m.Params())
	if err != nil {
		t.Fatal(err)
	}
	n, size := len(paths), m.InputSize()
	batch := make([]float32, n*size)
	for i, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		img, _, err := dec.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if err := pp.Run(img, batch[i*size:(i+1)*size]); err != nil {
			t.Fatal(err)
		}
	}
	dim := m.Spec().Dim
	out := make([]float32, n*dim)
	if err := m.Embed(batch, n, out); err != nil {
		t.Fatal(err)
	}
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = out[i*dim : (i+1)*dim]
	}
	return vecs
}

// TestEmbeddingParity embeds the fixture images in one batch through
// imageprep and ONNX Runtime and compares each vector with the article's
// PyTorch computation on the same weights.
func TestEmbeddingParity(t *testing.T) {
	fx := loadEmbeddingFixtures(t)
	for name, want := range fx.Models {
		t.Run(name, func(t *testing.T) {
			m := openModel(t, name)
			if m.Spec().Version != want.Version {
				t.Fatalf("model version %s, fixtures made with %s", m.Spec().Version, want.Version)
			}
			var paths []string
			for _, c := range want.Cases {
				paths = append(paths, filepath.Join("..", "imageprep", "testdata", "images", c.Image))
			}
			got := embedFiles(t, m, paths)
			minCos := 1.0
			defer func() { t.Logf("%s: min cosine with PyTorch %.7f over %d images", name, minCos, len(want.Cases)) }()
			for i, c := range want.Cases {
				ref := make([]float32, len(c.Embedding))
				for j, v := range c.Embedding {
					ref[j] = float32(v)
				}
				cos := embed.Cosine(got[i], ref)
				minCos = min(minCos, cos)
				if cos < 0.99999 {
					t.Errorf("%s: cosine %.7f with the PyTorch reference, want >= 0.99999", c.Image, cos)
				}
				var norm float64
				for _, v := range got[i] {
					norm += float64(v) * float64(v)
				}
				if math.Abs(norm-1) > 1e-5 {
					t.Errorf("%s: |v|^2 = %v, want 1 (L2-normalised)", c.Image, norm)
				}
			}
		})
	}
}

// TestArticleSimilarity computes the article's two-image score on its own
// example images with the tiny models, reading them as the article's code
// does (no EXIF handling), and compares with its PyTorch result.
func TestArticleSimilarity(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(root, "..", "shared", "seed")
	if _, err := os.Stat(filepath.Join(seed, "img1.jpg")); err != nil {
		t.Fatalf("the article's example images: %v (../shared/seed beside the checkout)", err)
	}
	fx := loadEmbeddingFixtures(t)
	for name, want := range fx.Models {
		m := openModel(t, name)
		v := embedFiles(t, m, []string{filepath.Join(seed, "img1.jpg"), filepath.Join(seed, "img2.jpg")},
			imageprep.WithoutEXIFOrientation())
		cos := embed.Cosine(v[0], v[1])
		if score := (cos + 1) / 2; math.Abs(score-want.SeedSimilarity.Score) > 1e-4 {
			t.Errorf("%s: similarity %.6f, the article's code on the same weights %.6f", name, score, want.SeedSimilarity.Score)
		}
	}
}

func TestCLSPooling(t *testing.T) {
	initRuntime(t)
	dir := t.TempDir()
	src := filepath.Join("testdata", "models", "dinov2-base")
	onnx, _ := os.ReadFile(filepath.Join(src, "model.onnx"))
	spec, _ := os.ReadFile(filepath.Join(src, "spec.json"))
	os.WriteFile(filepath.Join(dir, "model.onnx"), onnx, 0o644)
	os.WriteFile(filepath.Join(dir, "spec.json"), []byte(strings.Replace(string(spec), `"pooling": "mean"`, `"pooling": "cls"`, 1)), 0o644)
	cls, err := embed.Open(dir, embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cls.Close()
	mean := openModel(t, "dinov2-base")
	path := []string{filepath.Join("..", "imageprep", "testdata", "images", "photo_481x321.jpg")}
	a, b := embedFiles(t, cls, path)[0], embedFiles(t, mean, path)[0]
	if c := embed.Cosine(a, b); c > 0.9999 {
		t.Fatalf("CLS and mean pooling gave the same vector (cosine %v)", c)
	}
}

func TestOpenRejectsMismatches(t *testing.T) {
	initRuntime(t)
	src := filepath.Join("testdata", "models", "clip-vit-b32")
	onnx, _ := os.ReadFile(filepath.Join(src, "model.onnx"))
	specJSON, _ := os.ReadFile(filepath.Join(src, "spec.json"))
	for _, tc := range []struct {
		name    string
		edit    func(spec string) string
		onnx    []byte
		wantErr error
		wantMsg string
	}{
		{"another onnx file", nil, append(append([]byte{}, onnx...), 0), embed.ErrModelMismatch, "sha256"},
		{"wrong output name", func(s string) string {
			return strings.Replace(s, `"output": "image_embeds"`, `"output": "pooler_output"`, 1)
		}, nil, embed.ErrModelMismatch, "pooler_output"},
		{"wrong dim", func(s string) string { return strings.Replace(s, `"dim": 16`, `"dim": 512`, 1) }, nil, embed.ErrModelMismatch, "512"},
		{"wrong crop", func(s string) string { return strings.Replace(s, `"crop_height": 224`, `"crop_height": 256`, 1) }, nil, embed.ErrModelMismatch, "256"},
		{"bad pooling", func(s string) string {
			return strings.Replace(s, `"output_kind": "embeds"`, `"output_kind": "tokens", "pooling": "max"`, 1)
		}, nil, embed.ErrInvalidSpec, "pooling"},
		{"unknown field", func(s string) string { return strings.Replace(s, `"dim"`, `"dimension": 3, "dim"`, 1) }, nil, embed.ErrInvalidSpec, "dimension"},
		{"bad name", func(s string) string { return strings.Replace(s, `"name": "clip-vit-b32"`, `"name": "CLIP ViT"`, 1) }, nil, embed.ErrInvalidSpec, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			model := onnx
			if tc.onnx != nil {
				model = tc.onnx
			}
			spec := string(specJSON)
			if tc.edit != nil {
				spec = tc.edit(spec)
				if spec == string(specJSON) {
					t.Fatal("the edit changed nothing; the test is stale")
				}
			}
			os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644)
			os.WriteFile(filepath.Join(dir, "spec.json"), []byte(spec), 0o644)
			m, err := embed.Open(dir, embed.Options{})
			if err == nil {
				m.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q, want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

func TestEmbedValidatesShapes(t *testing.T) {
	m := openModel(t, "clip-vit-b32")
	if err := m.Embed(make([]float32, 10), 1, make([]float32, 16)); err == nil {
		t.Fatal("Embed with a short input succeeded")
	}
	if err := m.Embed(make([]float32, m.InputSize()), 1, make([]float32, 3)); err == nil {
		t.Fatal("Embed with a short output succeeded")
	}
}

func TestCUDAUnavailableIsClear(t *testing.T) {
	initRuntime(t)
	_, err := embed.Open(filepath.Join("testdata", "models", "clip-vit-b32"), embed.Options{Provider: embed.ProviderCUDA})
	if err == nil {
		t.Skip("this ONNX Runtime has CUDA; nothing to check")
	}
	if !strings.Contains(err.Error(), "CUDA execution provider is not available") {
		t.Fatalf("error %q does not say that CUDA is unavailable", err)
	}
}

func TestBuiltinSpecsAreValid(t *testing.T) {
	for _, name := range embed.BuiltinNames() {
		s, ok := embed.Builtin(name)
		if !ok {
			t.Fatalf("%s: not built in", name)
		}
		if s.IsText() {
			// The version is the installed image tower's, filled in at pull.
			s.PairsWith.Version = "sha256:0123"
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	clip, _ := embed.Builtin("clip-vit-b32")
	dino, _ := embed.Builtin("dinov2-base")
	if clip.Dim != 512 || clip.Output != "image_embeds" || dino.Dim != 768 || dino.Pooling != embed.PoolMean || dino.Preprocess.ShortestEdge != 256 {
		t.Fatalf("built-in specs differ from the article's models: %+v %+v", clip, dino)
	}
}

// TestOpenChecksTheRealOutputShape: DINOv2's graph leaves its hidden size
// symbolic, so only a real output shows a spec with the wrong dimension;
// Open runs one and refuses the model.
func TestOpenChecksTheRealOutputShape(t *testing.T) {
	initRuntime(t)
	src := filepath.Join("testdata", "models", "dinov2-base")
	onnx, _ := os.ReadFile(filepath.Join(src, "model.onnx"))
	specJSON, _ := os.ReadFile(filepath.Join(src, "spec.json"))
	spec := strings.Replace(string(specJSON), `"dim": 32`, `"dim": 768`, 1)
	if spec == string(specJSON) {
		t.Fatal("the edit changed nothing; the test is stale")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "model.onnx"), onnx, 0o644)
	os.WriteFile(filepath.Join(dir, "spec.json"), []byte(spec), 0o644)
	m, err := embed.Open(dir, embed.Options{})
	if err == nil {
		m.Close()
		t.Fatal("opened a DINOv2 export whose spec says 768 dimensions for a 32-dimensional output")
	}
	if !errors.Is(err, embed.ErrModelMismatch) || !strings.Contains(err.Error(), "768") {
		t.Fatalf("error %q, want ErrModelMismatch mentioning 768", err)
	}
}
