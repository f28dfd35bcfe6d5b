package vecstore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// insertCopies writes a second row under each of rows' ids with a plain
// insert, which Milvus does not check against the primary keys stored: the
// state that concurrent upserts of one id leave behind.
func insertCopies(t *testing.T, ctx context.Context, c *Collection, rows []Row) {
	t.Helper()
	n := len(rows)
	ids, uris, etags, vers, hashes := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	sizes, at := make([]int64, n), make([]int64, n)
	ws, hs := make([]int32, n), make([]int32, n)
	vecs := make([][]float32, n)
	for i, r := range rows {
		ids[i], uris[i], etags[i], vers[i], hashes[i] = r.ID, r.URI, r.ETag, c.Version, r.SHA256
		sizes[i], at[i], ws[i], hs[i], vecs[i] = r.Size, 1, int32(r.Width), int32(r.Height), r.Vector
	}
	opt := milvusclient.NewColumnBasedInsertOption(c.Name).
		WithVarcharColumn(FieldID, ids).WithFloatVectorColumn(FieldVector, c.Dim, vecs).
		WithVarcharColumn(FieldURI, uris).WithVarcharColumn(FieldETag, etags).
		WithInt64Column(FieldSize, sizes).WithInt32Column(FieldWidth, ws).WithInt32Column(FieldHeight, hs).
		WithVarcharColumn(FieldModelVersion, vers).WithInt64Column(FieldIndexedAt, at).
		WithVarcharColumn(FieldSHA256, hashes)
	if _, err := c.s.c.Insert(ctx, opt); err != nil {
		t.Fatal(err)
	}
}

// TestDuplicatedAndRewrite: copies under one id are seen by count(*) only;
// Duplicated names exactly the ids that have them, and Rewrite collapses
// them into one row each with the row's content and model version kept.
func TestDuplicatedAndRewrite(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := Connect(ctx, Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	sp, _ := embed.Builtin("clip-vit-b32")
	sp.Name, sp.Version, sp.Dim = testenv.Name(t, "dup"), "sha256:v1", 4
	col, err := st.Ensure(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000 // more than two count chunks
	rows := make([]Row, n)
	ids := make([]string, n)
	for i := range rows {
		uri := fmt.Sprintf("s3://b/imgs/%05d.jpg", i)
		v := []float32{1, float32(i), 0, 0}
		embed.Normalize(v)
		rows[i] = Row{ID: ID(uri), URI: uri, ETag: fmt.Sprintf("e%d", i), Size: int64(i), Width: 2, Height: 3, Vector: v, SHA256: "ab"}
		ids[i] = rows[i].ID
	}
	for first := 0; first < n; first += 1000 {
		if err := col.Upsert(ctx, rows[first:first+1000]); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := col.Duplicated(ctx, ids); err != nil || len(got) != 0 {
		t.Fatalf("clean collection: duplicated %v, %v", got, err)
	}
	dup := []int{3, 2047, 2048, 4999}
	var copies []Row
	for _, i := range dup {
		copies = append(copies, rows[i])
	}
	insertCopies(t, ctx, col, copies)
	insertCopies(t, ctx, col, copies[:1]) // a third row for one id
	total, err := col.Count(ctx)
	if err != nil || total != n+5 {
		t.Fatalf("count(*) %d, %v; want %d", total, err, n+5)
	}
	if under, err := col.CountUnder(ctx, "s3://b/imgs/"); err != nil || under != n+5 {
		t.Fatalf("count under the prefix %d, %v; want %d", under, err, n+5)
	}
	if under, err := col.CountUnder(ctx, "s3://b/other/"); err != nil || under != 0 {
		t.Fatalf("count under another prefix %d, %v", under, err)
	}
	if seen, err := col.Lookup(ctx, ids); err != nil || len(seen) != n {
		t.Fatalf("lookup sees %d rows, %v; want %d (one per id)", len(seen), err, n)
	}
	if c, err := col.CountIDs(ctx, []string{ids[3], "not an id\x00", ids[4]}); err != nil || c != 4 {
		t.Fatalf("count of three ids %d, %v; want 4", c, err)
	}
	got, err := col.Duplicated(ctx, ids)
	want := []string{ids[3], ids[2047], ids[2048], ids[4999]}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("duplicated %v, %v; want %v", got, err, want)
	}
	// An upgrade's rows keep their version: rewriting a row of another
	// version must not make it look current.
	old := rows[2048]
	old.ID, old.URI = ID("s3://b/imgs/old.jpg"), "s3://b/imgs/old.jpg"
	if err := col.write(ctx, []Row{old}, []written{{version: "sha256:v0", at: 7}}); err != nil {
		t.Fatal(err)
	}
	wrote, err := col.Rewrite(ctx, append(slices.Clone(got), old.ID, ID("s3://b/imgs/none.jpg")))
	if err != nil || wrote != 5 {
		t.Fatalf("rewrite wrote %d, %v; want 5", wrote, err)
	}
	if total, err := col.Count(ctx); err != nil || total != n+1 {
		t.Fatalf("after the rewrite count(*) %d, %v; want %d", total, err, n+1)
	}
	if got, err := col.Duplicated(ctx, ids); err != nil || len(got) != 0 {
		t.Fatalf("after the rewrite duplicated %v, %v", got, err)
	}
	meta, err := col.Lookup(ctx, []string{ids[3], old.ID})
	if err != nil || meta[ids[3]] != (RowMeta{ETag: "e3", ModelVersion: "sha256:v1"}) || meta[old.ID].ModelVersion != "sha256:v0" {
		t.Fatalf("after the rewrite: %+v, %v", meta, err)
	}
	back, found, err := col.Get(ctx, ids[4999])
	if err != nil || !found || !slices.Equal(back.Vector, rows[4999].Vector) || back.Size != 4999 || back.SHA256 != "ab" {
		t.Fatalf("rewritten row %+v found=%v, %v", back, found, err)
	}
}
