package search_test

import (
	"context"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// TestCollectionCacheFollowsARecreatedCollection: the Searcher remembers a
// model's collection between queries; when the collection is dropped and
// made again with another dimension, at most one query fails before the
// new one is found.
func TestCollectionCacheFollowsARecreatedCollection(t *testing.T) {
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr, CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	spec, _ := embed.Builtin("clip-vit-b32")
	spec.Name, spec.Version = testenv.Name(t, "m"), "sha256:aaa"
	put := func(dim int, uri string) []float32 {
		spec.Dim = dim
		col, err := st.Ensure(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]float32, dim)
		v[0] = 1
		if err := col.Upsert(ctx, []vecstore.Row{{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: v}}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	s := search.New(st, nil)
	v8 := put(8, "s3://b/eight")
	for range 2 {
		if hits, err := s.ByVector(ctx, spec.Name, v8, 1); err != nil || hits[0].URI != "s3://b/eight" {
			t.Fatalf("8-d search: %+v %v", hits, err)
		}
	}
	if err := mv.Client.DropCollection(ctx, milvusclient.NewDropCollectionOption(vecstore.CollectionName(spec.Name))); err != nil {
		t.Fatal(err)
	}
	v4 := put(4, "s3://b/four")
	var hits []search.Hit
	for attempt := 1; ; attempt++ {
		hits, err = s.ByVector(ctx, spec.Name, v4, 1)
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("the new collection is still not found after %d queries: %v", attempt, err)
		}
		t.Logf("query %d on the stale collection: %v", attempt, err)
	}
	if hits[0].URI != "s3://b/four" {
		t.Fatalf("4-d search: %+v", hits)
	}
}
