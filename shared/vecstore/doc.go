// Package vecstore keeps embedfleet's vectors in Milvus: one collection per
// model, created on first use with its index and loaded, idempotent upserts
// keyed by the object's identity, deletes, searches and point reads.
//
//	st, err := vecstore.Connect(ctx, vecstore.Config{Address: "localhost:19530"})
//	coll, err := st.Ensure(ctx, spec)              // create or check the model's collection
//	err = coll.Upsert(ctx, rows)                    // same key twice = one row
//	hits, err := coll.Search(ctx, vector, 10)       // cosine, best first
//
// A collection records the version (ONNX sha256) of the model whose vectors
// it holds, and never takes vectors of another: mixing two models' vectors
// silently ruins search. Each version of a model has a collection of its
// own (see versions.go), and Open answers with the active one's:
//
//	col, err := st.Ensure(ctx, specV2)              // clip_vit_b32__v<12 hex>, beside clip_vit_b32
//	rec, err := st.Activate(ctx, "clip-vit-b32", col) // queries switch to it
//	rec, err = st.Rollback(ctx, "clip-vit-b32")      // and back
package vecstore
