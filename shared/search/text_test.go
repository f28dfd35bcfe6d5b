package search_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// TestTextQueryEndToEnd indexes the fixture images with the tiny CLIP image
// tower into real milvus-lite, then searches them by text with the tiny
// text tower of the same CLIPModel: every caption's top hit is the image
// PyTorch ranks first (shared/embed/testdata/text_embeddings.json).
func TestTextQueryEndToEnd(t *testing.T) {
	if _, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatal(err)
	}
	models := filepath.Join("..", "embed", "testdata", "models")
	img, err := embed.Open(filepath.Join(models, "clip-vit-b32"), embed.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	txt, err := embed.OpenText(filepath.Join(models, "clip-vit-b32-text"), embed.Options{IntraOpThreads: 1, TokenizerDir: testenv.CLIPVocab(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer txt.Close()
	eng, err := engine.New(engine.Options{}, []engine.ImageEncoder{img}, []engine.TextEncoder{txt})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()

	var fx struct {
		Cases []struct {
			Text     string `json:"text"`
			TopImage string `json:"top_image"`
		} `json:"cases"`
	}
	b, err := os.ReadFile(filepath.Join("..", "embed", "testdata", "text_embeddings.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	images := []string{"photo_481x321.jpg", "photo_320x480.jpg", "small_100x75.jpg", "gray_300x300.jpg", "exif6_400x300.jpg", "rgba_157x211.png"}

	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr, CallTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	// The collection is the image model's; a test name keeps it apart.
	spec := img.Spec()
	col, err := st.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var rows []vecstore.Row
	for _, f := range images {
		data, err := os.ReadFile(filepath.Join("..", "imageprep", "testdata", "images", f))
		if err != nil {
			t.Fatal(err)
		}
		v, err := eng.EmbedImage(ctx, spec.Name, data)
		if err != nil {
			t.Fatal(err)
		}
		uri := "file:///fixtures/" + f
		rows = append(rows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: v})
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	s := search.New(st, eng)
	for _, c := range fx.Cases {
		// By the image model's name and by the text model's: the same query.
		for _, model := range []string{spec.Name, txt.Spec().Name} {
			hits, err := s.ByText(ctx, model, c.Text, 3)
			if err != nil {
				t.Fatalf("%q: %v", c.Text, err)
			}
			if want := "file:///fixtures/" + c.TopImage; hits[0].URI != want {
				t.Errorf("%q via %s: top hit %s, PyTorch's %s", c.Text, model, hits[0].URI, want)
			}
		}
	}
	if _, err := s.ByText(ctx, "dinov2-base", "a cat", 3); !errors.Is(err, engine.ErrUnknownModel) {
		t.Errorf("a model with no text tower: %v, want ErrUnknownModel", err)
	}
	if _, err := s.ByText(ctx, spec.Name, "\xff", 3); err == nil {
		t.Error("invalid UTF-8 was searched")
	}

	// The collection made by another version of the image tower: refused,
	// never answered.
	if err := st.Drop(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	other := spec
	other.Version = "sha256:" + "ab"
	if _, err := st.Ensure(ctx, other); err != nil {
		t.Fatal(err)
	}
	s2 := search.New(st, eng)
	if _, err := s2.ByText(ctx, spec.Name, "a cat", 3); !errors.Is(err, embed.ErrNotPaired) {
		t.Fatalf("a collection of another image version: %v, want ErrNotPaired", err)
	}
}
