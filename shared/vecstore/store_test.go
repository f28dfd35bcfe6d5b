package vecstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func spec(name, version string, dim int) embed.Spec {
	s, _ := embed.Builtin("clip-vit-b32")
	s.Name, s.Version, s.Dim = name, version, dim
	return s
}

func unit(dim, hot int) []float32 {
	v := make([]float32, dim)
	v[hot] = 1
	v[(hot+1)%dim] = 0.1
	embed.Normalize(v)
	return v
}

func TestCollectionRoundTrip(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	name := testenv.Name(t, "m")
	col, err := st.Ensure(ctx, spec(name, "sha256:aaa", 8))
	if err != nil {
		t.Fatalf("ensure: %v", err)
	}
	if _, err := st.Ensure(ctx, spec(name, "sha256:aaa", 8)); err != nil {
		t.Fatalf("ensure again (idempotent): %v", err)
	}
	var rows []vecstore.Row
	for i := 0; i < 8; i++ {
		key := string(rune('a' + i))
		rows = append(rows, vecstore.Row{ID: vecstore.ID("s3://b/" + key), URI: "s3://b/" + key, ETag: "e", Size: 10, Width: 4, Height: 3, Vector: unit(8, i)})
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatalf("upsert: %v", err)
	}
	rows[3].ETag = "changed"
	if err := col.Upsert(ctx, rows[2:5]); err != nil {
		t.Fatalf("upsert again: %v", err)
	}
	if n, err := col.Count(ctx); err != nil || n != 8 {
		t.Fatalf("count = %d (%v), want 8: upserting a key twice must not duplicate it", n, err)
	}
	hits, err := col.Search(ctx, unit(8, 5), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 3 || hits[0].URI != "s3://b/f" || hits[0].Cosine < 0.999 {
		t.Fatalf("search: %+v, want s3://b/f first at cosine ~1", hits)
	}
	// Several queries in one request: each answer in its query's place.
	many, err := col.SearchMany(ctx, [][]float32{unit(8, 2), unit(8, 7), unit(8, 0)}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(many) != 3 {
		t.Fatalf("search many: %d answers for 3 queries", len(many))
	}
	for i, want := range []string{"s3://b/c", "s3://b/h", "s3://b/a"} {
		if len(many[i]) != 2 || many[i][0].URI != want || many[i][0].Cosine < 0.999 {
			t.Fatalf("search many, query %d: %+v, want %s first", i, many[i], want)
		}
	}
	row, found, err := col.Get(ctx, vecstore.ID("s3://b/d"))
	if err != nil || !found || row.ETag != "changed" || len(row.Vector) != 8 || row.Width != 4 {
		t.Fatalf("get d: %+v found=%v err=%v", row, found, err)
	}
	if _, found, err := col.Get(ctx, "nope"); err != nil || found {
		t.Fatalf("get of a missing id: found=%v err=%v", found, err)
	}
	// Looking up the same slice twice gives the same answer (the client
	// once rewrote the slice it was given).
	ids := []string{rows[0].ID, rows[5].ID, "nope"}
	for range 2 {
		got, err := col.Lookup(ctx, ids)
		if err != nil || len(got) != 2 || got[rows[5].ID].ETag != "e" {
			t.Fatalf("lookup %v: %+v %v", ids, got, err)
		}
	}
	if err := col.Delete(ctx, []string{rows[0].ID, rows[1].ID}); err != nil {
		t.Fatal(err)
	}
	if n, _ := col.Count(ctx); n != 6 {
		t.Fatalf("count after deleting 2 = %d, want 6", n)
	}
}

// TestModelVersions: a second version of a model gets a collection of its
// own, the first keeps answering until the second is activated, rollback
// returns to it, and only a version that is not active can be retired.
func TestModelVersions(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	name := testenv.Name(t, "m") + "-x" // a '-': another spelling is name's collection's
	v1, v2 := "sha256:aaaa11112222", "sha256:bbbb33334444"
	c1, err := st.Ensure(ctx, spec(name, v1, 8))
	if err != nil || c1.Name != vecstore.CollectionName(name) {
		t.Fatalf("first version: %+v (%v), want the plain collection", c1, err)
	}
	c2, err := st.Ensure(ctx, spec(name, v2, 8))
	if err != nil || c2.Name != vecstore.VersionedName(name, v2) || c2.Version != v2 {
		t.Fatalf("second version: %+v (%v), want a collection of its own", c2, err)
	}
	if again, err := st.Ensure(ctx, spec(name, v2, 8)); err != nil || again.Name != c2.Name {
		t.Fatalf("second version again: %+v (%v)", again, err)
	}
	if _, err := st.Ensure(ctx, spec(name, v2, 16)); !errors.Is(err, vecstore.ErrModelVersionMismatch) {
		t.Fatalf("the second version with another dimension: %v, want ErrModelVersionMismatch", err)
	}
	row := func(key string, hot int) vecstore.Row {
		return vecstore.Row{ID: vecstore.ID("s3://b/" + key), URI: "s3://b/" + key, ETag: "e", Vector: unit(8, hot)}
	}
	if err := c1.Upsert(ctx, []vecstore.Row{row("a", 0), row("gone", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := c2.Upsert(ctx, []vecstore.Row{row("a", 4), row("b", 5), row("gone", 6)}); err != nil {
		t.Fatal(err)
	}
	// An object deleted from the source goes from every version.
	if err := st.DeleteObjects(ctx, name, []string{"s3://b/gone"}); err != nil {
		t.Fatal(err)
	}
	active := func(want string) {
		t.Helper()
		col, err := st.Open(ctx, name)
		if err != nil || col.Name != want {
			t.Fatalf("Open: %+v (%v), want %s", col, err, want)
		}
	}
	active(c1.Name)
	vs, err := st.Versions(ctx, name)
	if err != nil || len(vs) != 2 || !vs[0].Active || vs[1].Active || vs[0].Rows != 1 || vs[1].Rows != 2 {
		t.Fatalf("versions: %+v (%v), want the plain one active with 1 row, the new one with 2", vs, err)
	}
	if _, err := st.OpenVersion(ctx, name, "sha256:cccc"); !errors.Is(err, vecstore.ErrNoVersion) {
		t.Fatalf("open a version never indexed: %v, want ErrNoVersion", err)
	}
	if _, err := st.Rollback(ctx, name); !errors.Is(err, vecstore.ErrNoVersion) {
		t.Fatalf("rollback before any switch: %v", err)
	}
	found, err := st.FindVersion(ctx, name, "bbbb33")
	if err != nil || found.Collection != c2.Name {
		t.Fatalf("find version by prefix: %+v (%v)", found, err)
	}
	if _, err := st.FindVersion(ctx, name, "ab"); err == nil {
		t.Fatal("a 2-digit version prefix was accepted")
	}
	rec, err := st.Activate(ctx, name, c2)
	if err != nil || rec.Previous == nil || rec.Previous.Collection != c1.Name {
		t.Fatalf("activate: %+v (%v)", rec, err)
	}
	active(c2.Name)
	// On a server, any Milvus client sees the active version under the
	// model's alias; milvus-lite has no aliases.
	aliasIs := func(want string) {
		t.Helper()
		if mv.Backend != testenv.BackendServer {
			return
		}
		a, err := mv.Client.DescribeAlias(ctx, milvusclient.NewDescribeAliasOption(vecstore.AliasName(name)))
		if err != nil || a.CollectionName != want {
			t.Fatalf("alias %s: %+v (%v), want %s", vecstore.AliasName(name), a, err, want)
		}
	}
	aliasIs(c2.Name)
	if err := st.Retire(ctx, name, vecstore.VersionInfo{Collection: c2.Name}); err == nil {
		t.Fatal("the active version was retired")
	}
	// Every spelling of the model is the same model: its collection's name
	// (as `models versions` prints it), or a version's collection.
	alt := vecstore.CollectionName(name)
	if act, ok, err := st.Active(ctx, alt); err != nil || !ok || act.Collection != c2.Name || act.Target != name {
		t.Fatalf("Active(%s): %+v %v (%v), want %s's record", alt, act, ok, err, name)
	}
	if err := st.Retire(ctx, alt, vecstore.VersionInfo{Collection: c2.Name}); !errors.Is(err, vecstore.ErrActiveVersion) {
		t.Fatalf("retire the active version spelled %s: %v, want ErrActiveVersion", alt, err)
	}
	for _, spelled := range []string{c2.Name, alt + "__v" + vecstore.VersionTag(v2)} {
		if err := st.Drop(ctx, spelled); !errors.Is(err, vecstore.ErrActiveVersion) {
			t.Fatalf("drop %s, the active version: %v, want ErrActiveVersion", spelled, err)
		}
	}
	if m, v := vecstore.ParseModelRef(c2.Name); m != alt || v != vecstore.VersionTag(v2) {
		t.Fatalf("ParseModelRef(%s) = %s, %s", c2.Name, m, v)
	}
	if found, err := st.FindVersion(ctx, alt, c2.Name); err != nil || found.Collection != c2.Name || !found.Active {
		t.Fatalf("find version by its collection's name: %+v (%v)", found, err)
	}
	active(c2.Name)
	if _, err := st.Rollback(ctx, name); err != nil {
		t.Fatal(err)
	}
	active(c1.Name)
	aliasIs(c1.Name)
	if _, err := st.Rollback(ctx, name); err != nil { // a second rollback undoes the first
		t.Fatal(err)
	}
	active(c2.Name)
	if err := st.Retire(ctx, name, vecstore.VersionInfo{Collection: c1.Name}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Rollback(ctx, name); !errors.Is(err, vecstore.ErrNoVersion) {
		t.Fatalf("rollback to a retired version: %v", err)
	}
	// With the first collection retired, a third version gets its own
	// name too, never the plain one.
	v3 := "sha256:cccc55556666"
	c3, err := st.Ensure(ctx, spec(name, v3, 8))
	if err != nil || c3.Name != vecstore.VersionedName(name, v3) {
		t.Fatalf("third version: %+v (%v)", c3, err)
	}
	active(c2.Name)
}

func TestConnectErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if _, err := vecstore.Connect(ctx, vecstore.Config{Address: "127.0.0.1:1", DialTimeout: time.Second}); !errors.Is(err, vecstore.ErrUnavailable) {
		t.Fatalf("connect to a closed port: %v, want ErrUnavailable", err)
	}
	if _, err := vecstore.Connect(ctx, vecstore.Config{Address: "x:1", IndexType: "DISKANN?"}); err == nil {
		t.Fatal("an unknown index type was accepted")
	}
}

// TestMilvusOverTLS talks to milvus-lite through a TLS front with a
// certificate from a test CA: with the CA given, everything works; trusting
// only the system's CAs, or speaking plaintext to the TLS port, fails within
// the dial timeout with an error that names Milvus and says why.
func TestMilvusOverTLS(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ca := testenv.NewCA(t)
	addr := mv.TLSFront(t, ca)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	st, err := vecstore.Connect(ctx, vecstore.Config{Address: addr, CAFile: ca.CertFile})
	if err != nil {
		t.Fatalf("connect over TLS with the CA: %v", err)
	}
	defer st.Close(ctx)
	col, err := st.Ensure(ctx, spec(testenv.Name(t, "m"), "sha256:aaa", 8))
	if err != nil {
		t.Fatal(err)
	}
	if err := col.Upsert(ctx, []vecstore.Row{{ID: "a", URI: "s3://b/a", ETag: "e", Vector: unit(8, 1)}}); err != nil {
		t.Fatal(err)
	}
	if hits, err := col.Search(ctx, unit(8, 1), 1); err != nil || len(hits) != 1 || hits[0].URI != "s3://b/a" {
		t.Fatalf("search over TLS: %+v %v", hits, err)
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}

	for _, c := range []struct {
		name string
		cfg  vecstore.Config
		want []string
	}{
		{"system CAs only", vecstore.Config{Address: addr, TLS: true, DialTimeout: 3 * time.Second}, []string{addr, "certificate"}},
		{"plaintext to the TLS port", vecstore.Config{Address: addr, DialTimeout: 3 * time.Second}, []string{addr, "the server speaks TLS"}},
	} {
		start := time.Now()
		st, err := vecstore.Connect(ctx, c.cfg)
		if err == nil {
			st.Close(ctx)
			t.Errorf("%s: connected", c.name)
			continue
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: failed after %v, want within the dial timeout", c.name, d)
		}
		t.Logf("%s: %v", c.name, err)
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.name, err, w)
			}
		}
	}
}

// TestContentHashScanAndSets: rows keep their content hash through Get,
// GetMany, Search and Scan; Scan pages through every row under a prefix
// with vectors; a target's set has its own collection.
func TestContentHashScanAndSets(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	name := testenv.Name(t, "m")
	col, err := st.Ensure(ctx, spec(name, "sha256:aaa", 8))
	if err != nil {
		t.Fatal(err)
	}
	if !col.HasSHA256 {
		t.Fatal("a new collection has no content-hash field")
	}
	var rows []vecstore.Row
	for i := range 25 {
		dir := "a"
		if i%5 == 0 {
			dir = "b"
		}
		uri := fmt.Sprintf("s3://bk/%s/%02d.jpg", dir, i)
		rows = append(rows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Size: int64(i), Width: 2, Height: 3,
			Vector: unit(8, i%8), SHA256: fmt.Sprintf("%064x", i%12)})
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, found, err := col.Get(ctx, rows[13].ID)
	if err != nil || !found || got.SHA256 != rows[13].SHA256 || got.URI != rows[13].URI || got.Size != 13 {
		t.Fatalf("get: %+v found=%v err=%v", got, found, err)
	}
	many, err := col.GetMany(ctx, []string{rows[1].ID, rows[2].ID, "not-an-id", vecstore.ID("s3://bk/none")})
	if err != nil || len(many) != 2 || many[rows[2].ID].SHA256 != rows[2].SHA256 || len(many[rows[1].ID].Vector) != 8 {
		t.Fatalf("get many: %d rows %v", len(many), err)
	}
	hits, err := col.Search(ctx, unit(8, 3), 3)
	if err != nil || len(hits) != 3 || hits[0].SHA256 == "" {
		t.Fatalf("search: %+v %v", hits, err)
	}
	// Scan in pages smaller than the collection: every row once.
	seen := map[string]int{}
	err = col.Scan(ctx, "", 7, func(rs []vecstore.Row) error {
		if len(rs) > 7 {
			t.Errorf("a page of %d rows, batch 7", len(rs))
		}
		for _, r := range rs {
			seen[r.ID]++
			if len(r.Vector) != 8 || r.SHA256 == "" {
				t.Errorf("scanned row %+v lacks its vector or hash", r)
			}
		}
		return nil
	})
	if err != nil || len(seen) != 25 {
		t.Fatalf("scan saw %d rows (%v), want 25", len(seen), err)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("scan saw %s %d times", id, n)
		}
	}
	var under []string
	if err := col.Scan(ctx, "s3://bk/b/", 100, func(rs []vecstore.Row) error {
		for _, r := range rs {
			under = append(under, r.URI)
		}
		return nil
	}); err != nil || len(under) != 5 {
		t.Fatalf("scan under s3://bk/b/: %v (%v), want 5 rows", under, err)
	}
	stop := errors.New("stop")
	if err := col.Scan(ctx, "", 5, func([]vecstore.Row) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("scan whose callback fails: %v", err)
	}

	// A set of the same model is a collection of its own.
	target := vecstore.Target(name, vecstore.SetBackground)
	if m, s := vecstore.SplitTarget(target); m != name || s != vecstore.SetBackground {
		t.Fatalf("split %q = %q %q", target, m, s)
	}
	bg, err := st.Ensure(ctx, spec(target, "sha256:aaa", 8))
	if err != nil {
		t.Fatal(err)
	}
	if bg.Name == col.Name || !strings.HasSuffix(bg.Name, "__BACKGROUND") {
		t.Fatalf("background collection %q beside %q", bg.Name, col.Name)
	}
	if n, err := bg.Count(ctx); err != nil || n != 0 {
		t.Fatalf("background count = %d (%v), want 0", n, err)
	}
	if _, err := st.Open(ctx, target); err != nil {
		t.Fatal(err)
	}
}

func TestSetNames(t *testing.T) {
	for _, s := range []string{"", "Background", "a b", strings.Repeat("x", 33), "bg_1"} {
		if vecstore.ValidSet(s) == nil {
			t.Errorf("set %q accepted", s)
		}
	}
	if err := vecstore.ValidSet("background"); err != nil {
		t.Error(err)
	}
	if got := vecstore.CollectionName("clip-vit-b32"); got != "clip_vit_b32" {
		t.Errorf("collection of clip-vit-b32 = %q", got)
	}
	if got := vecstore.CollectionName("clip-vit-b32@background"); got != "clip_vit_b32__BACKGROUND" {
		t.Errorf("collection of clip-vit-b32@background = %q", got)
	}
}

// TestDeleteManyIDs: a delete of more ids than one request takes (a
// server's message limit) goes in chunks, and every row goes.
func TestDeleteManyIDs(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	col, err := st.Ensure(ctx, spec(testenv.Name(t, "del"), "sha256:d1", 4))
	if err != nil {
		t.Fatal(err)
	}
	n := 2*vecstore.DeleteChunk + 500
	rows := make([]vecstore.Row, n)
	uris := make([]string, n)
	for i := range rows {
		uris[i] = fmt.Sprintf("s3://b/%05d.jpg", i)
		rows[i] = vecstore.Row{ID: vecstore.ID(uris[i]), URI: uris[i], ETag: "e", Vector: unit(4, i%4)}
	}
	if err := col.Upsert(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteObjects(ctx, col.Model, uris[:n-1]); err != nil {
		t.Fatal(err)
	}
	if c, err := col.Count(ctx); err != nil || c != 1 {
		t.Fatalf("after deleting all but one of %d rows: count %d (%v)", n, c, err)
	}
}
