package vecstore

import (
	"context"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// TestCollectionWithoutContentHash: a collection made before the content
// hash existed (its schema, made here as that version made it) keeps
// working: rows are written without a hash and read back with none.
func TestCollectionWithoutContentHash(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := Connect(ctx, Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	sp, _ := embed.Builtin("clip-vit-b32")
	sp.Name, sp.Version, sp.Dim = testenv.Name(t, "old"), "sha256:old", 4
	name := CollectionName(sp.Name)
	schema := entity.NewSchema().WithName(name).WithDescription(describe(sp)).
		WithField(entity.NewField().WithName(FieldID).WithDataType(entity.FieldTypeVarChar).WithMaxLength(64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName(FieldVector).WithDataType(entity.FieldTypeFloatVector).WithDim(4)).
		WithField(entity.NewField().WithName(FieldURI).WithDataType(entity.FieldTypeVarChar).WithMaxLength(2048)).
		WithField(entity.NewField().WithName(FieldETag).WithDataType(entity.FieldTypeVarChar).WithMaxLength(128)).
		WithField(entity.NewField().WithName(FieldSize).WithDataType(entity.FieldTypeInt64)).
		WithField(entity.NewField().WithName(FieldWidth).WithDataType(entity.FieldTypeInt32)).
		WithField(entity.NewField().WithName(FieldHeight).WithDataType(entity.FieldTypeInt32)).
		WithField(entity.NewField().WithName(FieldModelVersion).WithDataType(entity.FieldTypeVarChar).WithMaxLength(80)).
		WithField(entity.NewField().WithName(FieldIndexedAt).WithDataType(entity.FieldTypeInt64))
	if err := st.c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema)); err != nil {
		t.Fatal(err)
	}
	col, err := st.Ensure(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	if col.HasSHA256 {
		t.Fatal("an old collection claims a content-hash field")
	}
	row := Row{ID: ID("s3://b/x"), URI: "s3://b/x", ETag: "e", Vector: []float32{1, 0, 0, 0}, SHA256: "ab"}
	if err := col.Upsert(ctx, []Row{row}); err != nil {
		t.Fatalf("upsert into an old collection: %v", err)
	}
	got, found, err := col.Get(ctx, row.ID)
	if err != nil || !found || got.SHA256 != "" || got.URI != row.URI {
		t.Fatalf("get: %+v %v %v", got, found, err)
	}
	hits, err := col.Search(ctx, row.Vector, 1)
	if err != nil || len(hits) != 1 || hits[0].SHA256 != "" {
		t.Fatalf("search: %+v %v", hits, err)
	}
	opened, err := st.Open(ctx, sp.Name)
	if err != nil || opened.HasSHA256 {
		t.Fatalf("open: %+v %v", opened, err)
	}
}
