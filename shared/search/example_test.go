package search_test

import (
	"context"
	"fmt"
	"os"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// Search a model's collection with an image, preprocessed and embedded as
// the worker indexed it. Needs ONNX Runtime, a model folder and Milvus.
func Example() {
	ctx := context.Background()
	if _, err := embed.Init(embed.LibraryPath("")); err != nil {
		fmt.Println(err)
		return
	}
	m, err := embed.Open("models/clip-vit-b32", embed.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: "localhost:19530"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close(ctx)
	data, err := os.ReadFile("query.jpg")
	if err != nil {
		fmt.Println(err)
		return
	}
	eng, err := engine.New(engine.Options{}, []engine.ImageEncoder{m}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Close()
	s := search.New(st, eng)
	hits, err := s.ByImage(ctx, "clip-vit-b32", data, 10)
	for _, h := range hits {
		fmt.Println(h.Rank, h.URI, h.Score) // Score is the article's (cos+1)/2
	}
	fmt.Println(err)
}
