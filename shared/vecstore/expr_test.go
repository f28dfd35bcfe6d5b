package vecstore_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// hostileStrings are values an attacker (or an odd bucket) puts where a
// filter expression takes a string: quotes, brackets, backslashes,
// operators, LIKE wildcards, control characters and unicode.
var hostileStrings = []string{
	`nope"] or uri like "s3://b/odd/U%" or id in ["nope`,
	`x" or 1==1 or id=="`,
	`x' or 1==1 or id=='`,
	`\" or 1==1 or \"`,
	`a\\`, `\`, `"`, `""`, `[]`, `%`, `_`, `\%`, `\_`,
	"tab\there", "new\nline", "nul\x00byte", "bell\x07",
	`ü/日本/😀`, `a && b || !c`, `id in ["x"]`, `(1)`, `uri != ""`,
}

// TestFiltersAreInert: every value that reaches a Milvus expression (ids,
// URIs and prefixes) matches only itself, on the real server: hostile ids
// match nothing and are never sent (deleting by one is refused), rows whose URIs hold hostile strings
// round-trip, and prefixes match exactly the URIs that start with them.
func TestFiltersAreInert(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	col, err := st.Ensure(ctx, spec(testenv.Name(t, "m"), "sha256:aaa", 8))
	if err != nil {
		t.Fatal(err)
	}
	uris := []string{"s3://b/odd/U1", "s3://b/folder/inside.jpg", "s3://b/fold/x.jpg", "s3://b/odd_/a", "s3://b/oddX/a", "s3://b/odd%/a"}
	for _, h := range hostileStrings {
		uris = append(uris, "s3://b/h/"+h)
	}
	var rows []vecstore.Row
	for i, u := range uris {
		rows = append(rows, vecstore.Row{ID: vecstore.ID(u), URI: u, ETag: "e", Vector: unit(8, i%8)})
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatal(err)
	}

	for _, h := range append(slices.Clone(hostileStrings), strings.ToUpper(vecstore.ID("s3://b/odd/U1")), vecstore.ID("x")[:31], "") {
		if row, found, err := col.Get(ctx, h); found || err != nil {
			t.Errorf("Get(%q) = %q, %v, %v: want not found (not an id, so no row)", h, row.URI, found, err)
		}
		if got, err := col.Lookup(ctx, []string{vecstore.ID("s3://b/odd/U1"), h}); err != nil || len(got) != 1 {
			t.Errorf("Lookup(..., %q) = %v, %v: want just the one real row", h, got, err)
		}
		if err := col.Delete(ctx, []string{h}); !errors.Is(err, vecstore.ErrInvalidID) {
			t.Errorf("Delete(%q): %v, want ErrInvalidID", h, err)
		}
	}
	for _, u := range uris {
		row, found, err := col.Get(ctx, vecstore.ID(u))
		if err != nil || !found || row.URI != u {
			t.Errorf("Get(ID(%q)) = %q, %v, %v: want the row back byte for byte", u, row.URI, found, err)
		}
	}
	// Every prefix matches exactly the URIs that start with it.
	prefixes := []string{"s3://b/fold/", "s3://b/odd_/", "s3://b/odd%/", "s3://b/odd", "s3://b/h/\\", "s3://b/h/%", "s3://b/h/\"", "s3://b/h/_"}
	for _, h := range hostileStrings {
		prefixes = append(prefixes, "s3://b/h/"+h)
	}
	for _, p := range prefixes {
		var got []string
		err := col.EachWithPrefix(ctx, p, func(_, uri string) error { got = append(got, uri); return nil })
		if err != nil {
			t.Errorf("EachWithPrefix(%q): %v", p, err)
			continue
		}
		var want []string
		for _, u := range uris {
			if strings.HasPrefix(u, p) {
				want = append(want, u)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("EachWithPrefix(%q) = %q, want %q", p, got, want)
		}
	}
	if n, err := col.Count(ctx); err != nil || n != int64(len(uris)) {
		t.Fatalf("count %d (%v), want %d: a hostile value deleted rows", n, err, len(uris))
	}
}
