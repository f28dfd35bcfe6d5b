package main

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

type textFixture struct {
	Cases []struct {
		Text     string             `json:"text"`
		TopImage string             `json:"top_image"`
		Cosines  map[string]float64 `json:"cosines"`
	} `json:"cases"`
}

func loadTextFixture(t *testing.T) textFixture {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, "shared", "embed", "testdata", "text_embeddings.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f textFixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// fixtureImages copies the six images the text fixtures rank into a folder.
func fixtureImages(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"photo_481x321.jpg", "photo_320x480.jpg", "small_100x75.jpg", "gray_300x300.jpg", "exif6_400x300.jpg", "rgba_157x211.png"} {
		b, err := os.ReadFile(repoPath(t, "shared", "imageprep", "testdata", "images", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func textEnv(t *testing.T) []string {
	return append(ortEnv(t, tinyModels(t)), "EMBEDFLEET_CLIP_VOCAB="+testenv.CLIPVocab(t),
		"EMBEDFLEET_MILVUS_BIN="+testenv.Binary(t, testenv.EnvMilvusBin))
}

// TestDevQueryText: `dev --query-text` indexes the fixture images and the
// text tower (found by --text-models auto) ranks first the image PyTorch
// ranks first, through real milvus-lite.
func TestDevQueryText(t *testing.T) {
	t.Parallel()
	fx := loadTextFixture(t)
	dir := fixtureImages(t)
	c := fx.Cases[1]
	out, err := runSplit(t, textEnv(t), "dev", "--images", dir, "--models", "clip-vit-b32", "--query-text", c.Text, "--top-k", "1")
	if err != nil {
		t.Fatalf("dev: %v\n%s", err, out)
	}
	if !strings.Contains(out, "text tower clip-vit-b32-text") || !strings.Contains(out, "/"+c.TopImage) {
		t.Fatalf("dev --query-text %q: want %s first:\n%s", c.Text, c.TopImage, out)
	}
}

// TestSimilarityTextAndImage: similarity --text gives PyTorch's cosine
// between the caption and the image.
func TestSimilarityTextAndImage(t *testing.T) {
	fx := loadTextFixture(t)
	dir := fixtureImages(t)
	env := textEnv(t)
	for _, c := range fx.Cases[:3] {
		out, err := run(t, env, "similarity", "--model", "clip-vit-b32", "--text", c.Text, filepath.Join(dir, "gray_300x300.jpg"))
		if err != nil {
			t.Fatalf("similarity: %v\n%s", err, out)
		}
		_, after, ok := strings.Cut(out, "cosine=")
		if !ok || !strings.Contains(out, "text=clip-vit-b32-text") {
			t.Fatalf("similarity output: %s", out)
		}
		got, _ := strconv.ParseFloat(strings.Fields(after)[0], 64)
		if want := c.Cosines["gray_300x300.jpg"]; math.Abs(got-want) > 1e-5 {
			t.Errorf("%q: cosine %.6f, PyTorch %.6f", c.Text, got, want)
		}
	}
	if out, err := run(t, env, "similarity", "--model", "dinov2-base", "--text", "a cat", filepath.Join(dir, "gray_300x300.jpg")); err == nil ||
		!strings.Contains(out, "text tower") {
		t.Fatalf("similarity --text with a model that has no text tower: %v\n%s", err, out)
	}
	if out, err := run(t, env, "similarity", "--model", "clip-vit-b32", "--text", "  ", filepath.Join(dir, "gray_300x300.jpg")); err == nil ||
		!strings.Contains(out, "empty") {
		t.Fatalf("similarity with an empty text: %v\n%s", err, out)
	}
}

// TestEmbedTextFile: one line per text, in order; a line that is not
// UTF-8 is a recorded failure and the others still embed.
func TestEmbedTextFile(t *testing.T) {
	env := textEnv(t)
	f := filepath.Join(t.TempDir(), "texts.txt")
	os.WriteFile(f, []byte("a photo of a cat\n\xff\xfe\nzwei Hunde\n"), 0o644)
	out, err := runSplit(t, env, "embed", "--model", "clip-vit-b32-text", "--text-file", f)
	if err == nil {
		t.Fatalf("a bad line did not fail the command:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], `{"text":"a photo of a cat","model":"clip-vit-b32-text"`) ||
		!strings.Contains(lines[1], "UTF-8") || !strings.HasPrefix(lines[2], `{"text":"zwei Hunde"`) {
		t.Fatalf("embed --text-file:\n%s", out)
	}
}

// TestQueryTextNeedsATextTower: query --text with a model that has none
// says what is missing, before reaching Milvus.
func TestQueryTextNeedsATextTower(t *testing.T) {
	out, err := run(t, textEnv(t), "query", "--model", "dinov2-base", "--text", "a cat", "--milvus-addr", "127.0.0.1:1")
	if err == nil || !strings.Contains(out, "text tower that pairs with dinov2-base") {
		t.Fatalf("query --text on dinov2-base: %v\n%s", err, out)
	}
}

// TestModelsPullText: pulling CLIP's text tower fetches its tokenizer files
// with it, records their sha256 and the installed image tower's version,
// and refuses to pull before that image tower is there.
func TestModelsPullText(t *testing.T) {
	files := map[string][]byte{}
	read := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	read("/acme/clip/resolve/abc123/onnx/vision_model.onnx", filepath.Join(tinyModels(t), "clip-vit-b32", "model.onnx"))
	read("/acme/clip/resolve/abc123/onnx/text_model.onnx", filepath.Join(tinyModels(t), "clip-vit-b32-text", "model.onnx"))
	read("/acme/clip/resolve/abc123/vocab.json", filepath.Join(testenv.CLIPVocab(t), "vocab.json"))
	read("/acme/clip/resolve/abc123/merges.txt", filepath.Join(testenv.CLIPVocab(t), "merges.txt"))
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[r.URL.Path]; ok {
			w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	defer hub.Close()
	dir := t.TempDir()
	env := ortEnv(t, dir)
	pull := func(model, file string, extra ...string) (string, error) {
		return run(t, env, append([]string{"models", "pull", "--endpoint", hub.URL, "--repo", "acme/clip", "--revision", "abc123",
			"--model", model, "--file", file}, extra...)...)
	}
	if out, err := pull("clip-vit-b32-text", "onnx/text_model.onnx", "--dim", "16"); err == nil || !strings.Contains(out, "pull it first") {
		t.Fatalf("a text tower pulled before its image tower: %v\n%s", err, out)
	}
	if out, err := pull("clip-vit-b32", "onnx/vision_model.onnx", "--dim", "16"); err != nil {
		t.Fatalf("pull the image tower: %v\n%s", err, out)
	}
	if out, err := pull("clip-vit-b32-text", "onnx/text_model.onnx", "--dim", "16"); err != nil {
		t.Fatalf("pull the text tower: %v\n%s", err, out)
	}
	var spec struct {
		PairsWith struct{ Name, Version string } `json:"pairs_with"`
		Tokenizer struct {
			VocabSHA256 string `json:"vocab_sha256"`
		} `json:"tokenizer"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "clip-vit-b32-text", "spec.json"))
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(filepath.Join(dir, "clip-vit-b32", "spec.json"))
	if spec.PairsWith.Name != "clip-vit-b32" || !strings.Contains(string(img), spec.PairsWith.Version) || len(spec.Tokenizer.VocabSHA256) != 64 {
		t.Fatalf("pulled text spec: %+v", spec)
	}
	// It opens with its own tokenizer files, no --tokenizer-dir needed.
	f := filepath.Join(t.TempDir(), "t.txt")
	os.WriteFile(f, []byte("a photo of a cat\n"), 0o644)
	if out, err := run(t, append(env, "EMBEDFLEET_CLIP_VOCAB="), "embed", "--model", "clip-vit-b32-text", "--text-file", f); err != nil {
		t.Fatalf("embed with the pulled text tower: %v\n%s", err, out)
	}
}
