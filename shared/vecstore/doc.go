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
// it holds; Ensure refuses a model of another version with
// ErrModelVersionMismatch, since mixing two models' vectors silently ruins
// search.
package vecstore
