package embed_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// TestInt8Model: the int8 quantisations of the tiny CLIP open, embed the
// fixture images within cosine 0.999 of fp32, and are refused under a spec
// that says another precision; an fp32 graph is refused under a spec that
// says int8, and an unknown precision is not a spec. Two graphs:
// models-int8/clip-vit-b32 quantises the plain export (MatMulInteger;
// deploy/export/make_int8_fixture.py), models-int8/clip-vit-b32-qattention
// the fused one, as export.py --int8 writes it (attention in
// com.microsoft.QAttention; export.py --model clip-vit-b32 --random-init
// --tiny --seed 7 --int8 --int8-min-cosine 0.999 --calib-images
// shared/imageprep/testdata/images). On an x86-64 core without VNNI the
// bound holds only because the engine asks ONNX Runtime for its exact int8
// kernel there (int8Saturates): the default one gave 0.974-0.980.
func TestInt8Model(t *testing.T) {
	initRuntime(t)
	fp := openModel(t, "clip-vit-b32")
	var paths []string
	for _, c := range loadEmbeddingFixtures(t).Models["clip-vit-b32"].Cases {
		paths = append(paths, filepath.Join("..", "imageprep", "testdata", "images", c.Image))
	}
	want := embedFiles(t, fp, paths)
	for _, name := range []string{"clip-vit-b32", "clip-vit-b32-qattention"} {
		dir := filepath.Join("testdata", "models-int8", name)
		graph, err := os.ReadFile(filepath.Join(dir, "model.onnx"))
		if err != nil {
			t.Fatal(err)
		}
		if fused := bytes.Contains(graph, []byte("QAttention")); fused != strings.HasSuffix(name, "-qattention") {
			t.Fatalf("%s: holds QAttention: %v", dir, fused)
		}
		q, err := embed.Open(dir, embed.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		if q.Spec().Precision != embed.PrecisionInt8 {
			t.Fatalf("%s: precision %q", dir, q.Spec().Precision)
		}
		got := embedFiles(t, q, paths)
		q.Close()
		for i := range want {
			if cos := embed.Cosine(want[i], got[i]); cos < 0.999 {
				t.Errorf("%s: %s: int8 at cosine %.5f to fp32, want >= 0.999", name, paths[i], cos)
			}
		}
	}
	dir := filepath.Join("testdata", "models-int8", "clip-vit-b32")
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
