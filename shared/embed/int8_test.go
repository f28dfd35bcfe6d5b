package embed_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// TestInt8Model: the int8 quantisation of the tiny CLIP (deploy/export/
// make_int8_fixture.py) opens, embeds the fixture images within cosine
// 0.999 of fp32, and is refused under a spec that says another precision;
// an fp32 graph is refused under a spec that says int8, and an unknown
// precision is not a spec.
func TestInt8Model(t *testing.T) {
	initRuntime(t)
	dir := filepath.Join("testdata", "models-int8", "clip-vit-b32")
	q, err := embed.Open(dir, embed.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Spec().Precision != embed.PrecisionInt8 {
		t.Fatalf("precision %q", q.Spec().Precision)
	}
	fp := openModel(t, "clip-vit-b32")
	var paths []string
	for _, c := range loadEmbeddingFixtures(t).Models["clip-vit-b32"].Cases {
		paths = append(paths, filepath.Join("..", "imageprep", "testdata", "images", c.Image))
	}
	a, b := embedFiles(t, fp, paths), embedFiles(t, q, paths)
	for i := range a {
		if cos := embed.Cosine(a[i], b[i]); cos < 0.999 {
			t.Errorf("%s: int8 at cosine %.5f to fp32, want >= 0.999", paths[i], cos)
		}
	}
	respec := func(from, precision string) string {
		t.Helper()
		to := t.TempDir()
		onnx, _ := os.ReadFile(filepath.Join(from, "model.onnx"))
		spec, _ := os.ReadFile(filepath.Join(from, "spec.json"))
		os.WriteFile(filepath.Join(to, "model.onnx"), onnx, 0o644)
		s := strings.Replace(string(spec), `"precision": "`+map[bool]string{true: "int8", false: "fp32"}[strings.Contains(from, "int8")]+`"`, `"precision": "`+precision+`"`, 1)
		os.WriteFile(filepath.Join(to, "spec.json"), []byte(s), 0o644)
		return to
	}
	if _, err := embed.Open(respec(dir, "fp32"), embed.Options{}); !errors.Is(err, embed.ErrModelMismatch) || !strings.Contains(err.Error(), "quantised") {
		t.Errorf("an int8 graph under an fp32 spec: %v", err)
	}
	if _, err := embed.Open(respec(filepath.Join("testdata", "models", "clip-vit-b32"), "int8"), embed.Options{}); !errors.Is(err, embed.ErrModelMismatch) {
		t.Errorf("an fp32 graph under an int8 spec: %v", err)
	}
	if _, err := embed.Open(respec(dir, "int4"), embed.Options{}); !errors.Is(err, embed.ErrInvalidSpec) {
		t.Errorf("precision int4: %v", err)
	}
}
