package vecstore_test

import (
	"context"
	"fmt"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// Keep one model's vectors: create or check its collection, upsert rows
// keyed by the object's URI, search by cosine. Needs a Milvus server.
func Example() {
	ctx := context.Background()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: "localhost:19530"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close(ctx)
	spec, _ := embed.Builtin("clip-vit-b32")
	col, err := st.Ensure(ctx, spec) // refuses another version of the model
	if err != nil {
		fmt.Println(err)
		return
	}
	vec := make([]float32, spec.Dim)
	vec[0] = 1
	uri := "s3://photos/cat.jpg"
	if err := col.Upsert(ctx, []vecstore.Row{{ID: vecstore.ID(uri), URI: uri, ETag: "e1", Vector: vec}}); err != nil {
		fmt.Println(err)
		return
	}
	hits, err := col.Search(ctx, vec, 5)
	fmt.Println(hits, err)
}
