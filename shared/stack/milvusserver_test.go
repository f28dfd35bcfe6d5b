package stack_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// TestMilvusServerRestart: the real Milvus server, started by the harness
// on ports of its own, keeps what it was given across a stop and a start
// on the same data, and takes writes again once it is back.
func TestMilvusServerRestart(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvusServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	spec, _ := embed.Builtin("clip-vit-b32")
	spec.Name, spec.Version, spec.Dim = "restart", "sha256:r", 4
	row := func(i int) vecstore.Row {
		uri := fmt.Sprintf("s3://b/%d.jpg", i)
		v := []float32{1, float32(i), 0, 0}
		embed.Normalize(v)
		return vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: v}
	}
	write := func(i int) time.Duration {
		t.Helper()
		st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close(ctx)
		start := time.Now()
		col, err := st.Ensure(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := col.Upsert(ctx, []vecstore.Row{row(i)}); err != nil {
			t.Fatal(err)
		}
		if n, err := col.Count(ctx); err != nil || n != int64(i+1) {
			t.Fatalf("count after writing row %d: %d (%v)", i, n, err)
		}
		return time.Since(start)
	}
	write(0)
	mv.Stop()
	start := time.Now()
	mv.Restart(t)
	back := time.Since(start)
	took := write(1)
	t.Logf("the server was back in %v; the first write after it took %v", back, took)
}
