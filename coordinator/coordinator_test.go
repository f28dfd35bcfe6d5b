package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// crashingSource stops the listing after n objects, as a coordinator that
// dies mid-enumeration would.
type crashingSource struct {
	objstore.Source
	n int
}

var errCrash = errors.New("simulated crash")

func (c crashingSource) List(ctx context.Context, after string, fn func(objstore.Object) error) error {
	seen := 0
	return c.Source.List(ctx, after, func(o objstore.Object) error {
		if seen == c.n {
			return errCrash
		}
		seen++
		return fn(o)
	})
}

func folder(t *testing.T, n int) objstore.Source {
	dir := t.TempDir()
	for i := range n {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%05d.jpg", i)), []byte("x"), 0o644)
	}
	src, err := objstore.Open(dir, objstore.S3Config{}, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestCoordinatorResume: a run that dies mid-enumeration is resumed by the
// next run: the same run id, every object published in exactly one job,
// no job published twice (the jobs published after the last checkpoint are
// published again with the same ids and dropped by the stream).
func TestCoordinatorResume(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topo := bus.Topology{Prefix: "RESUME"}
	if err := topo.Ensure(ctx, n.JS, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	src := folder(t, 1000)
	cfg := coordinator.Config{JS: n.JS, Topology: topo, Models: []string{"m"}, JobSize: 7,
		MaxInFlight: 20, Checkpoint: time.Hour} // checkpoints every 20 jobs only
	cfg.Source = crashingSource{src, 500}
	rec1, err := coordinator.Run(ctx, cfg)
	if !errors.Is(err, errCrash) {
		t.Fatalf("first run: %v, want the simulated crash", err)
	}
	if rec1.Enumerated || rec1.LastKey == "" {
		t.Fatalf("first run record %+v: want a checkpoint and not enumerated", rec1)
	}
	// The jobs published asynchronously before the crash reach the stream
	// in their own time (late on a loaded machine): wait for their acks.
	select {
	case <-n.JS.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("the jobs published before the crash were never acknowledged")
	}
	stream, _ := n.JS.Stream(ctx, topo.JobsStream())
	info, _ := stream.Info(ctx)
	publishedBeforeCrash := info.State.Msgs
	t.Logf("crashed after publishing %d jobs; checkpoint at job %d (%s)", publishedBeforeCrash, rec1.Jobs, rec1.LastKey)
	if uint64(rec1.Jobs) >= publishedBeforeCrash {
		t.Fatalf("no job was published after the checkpoint (%d published, checkpoint %d); the test proves nothing", publishedBeforeCrash, rec1.Jobs)
	}

	cfg.Source = src
	rec2, err := coordinator.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rec2.ID != rec1.ID || !rec2.Enumerated || rec2.Listed != 1000 || rec2.Jobs != 143 {
		t.Fatalf("resumed run %+v: want run %s, 1000 listed in 143 jobs", rec2, rec1.ID)
	}
	info, _ = stream.Info(ctx)
	if info.State.Msgs != 143 {
		t.Fatalf("the jobs stream holds %d jobs, want 143: a job was published twice or lost", info.State.Msgs)
	}
	seen := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var j jobs.Job
		if err := json.Unmarshal(m.Data, &j); err != nil {
			t.Fatal(err)
		}
		for _, it := range j.Items {
			seen[it.Key]++
		}
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct objects in the jobs, want 1000", len(seen))
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s is in %d jobs", k, c)
		}
	}

	// A third run starts afresh: the last one finished enumerating.
	rec3, err := coordinator.Run(ctx, cfg)
	if err != nil || rec3.ID == rec1.ID {
		t.Fatalf("third run %+v (%v): want a new run", rec3, err)
	}
}

func TestLeaseHeld(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	ctx := context.Background()
	topo := bus.Topology{Prefix: "LEASE"}
	if err := topo.Ensure(ctx, n.JS, bus.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	src := folder(t, 3)
	kv, _ := n.JS.KeyValue(ctx, topo.LeasesBucket())
	kv.Create(ctx, coordinator.SourceKey(src.URI()), []byte("someone-else"))
	_, err := coordinator.Run(ctx, coordinator.Config{JS: n.JS, Topology: topo, Source: src, Models: []string{"m"}})
	if !errors.Is(err, bus.ErrLeaseHeld) {
		t.Fatalf("run with the lease held: %v, want ErrLeaseHeld", err)
	}
}
