package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("stream X: %w", nats.ErrTimeout), true},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{nats.ErrConnectionReconnecting, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}, false},
		{jetstream.ErrStreamNotFound, false},
		{context.Canceled, false},
		{errors.New("insufficient resources"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestRetryAPI(t *testing.T) {
	ctx := context.Background()
	calls := 0
	err := retryAPI(ctx, time.Minute, func(actx context.Context) error {
		calls++
		if _, ok := actx.Deadline(); !ok {
			t.Error("an attempt without a deadline")
		}
		if calls < 3 {
			return nats.ErrNoResponders
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("transient twice then ok: err %v after %d calls, want nil after 3", err, calls)
	}

	calls = 0
	bad := &jetstream.APIError{Code: 400, Description: "bad config"}
	if err := retryAPI(ctx, time.Minute, func(context.Context) error { calls++; return bad }); !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("a permanent error: %v after %d calls, want it at once", err, calls)
	}

	calls = 0
	start := time.Now()
	err = retryAPI(ctx, 600*time.Millisecond, func(context.Context) error { calls++; return nats.ErrTimeout })
	if !errors.Is(err, nats.ErrTimeout) || !strings.Contains(err.Error(), "still failing after 600ms") || calls < 2 {
		t.Fatalf("past its wait: %v after %d calls, want the last error, said to persist, after at least 2", err, calls)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("past its wait it took %s", took)
	}

	cctx, cancel := context.WithCancel(ctx)
	calls = 0
	err = retryAPI(cctx, time.Minute, func(context.Context) error { calls++; cancel(); return context.DeadlineExceeded })
	if err == nil || calls != 1 {
		t.Fatalf("ctx ended: %v after %d calls, want the error after 1", err, calls)
	}
}

// TestEnsureWaitsForJetStream starts Ensure on a 3-node cluster that has
// lost its quorum (2 nodes down: JetStream answers, but cannot create
// anything), as processes that start while a cluster elects its leaders:
// it must wait until the cluster is whole again, then create everything
// at 3 replicas, not fail at its first call.
func TestEnsureWaitsForJetStream(t *testing.T) {
	t.Parallel()
	c := testenv.StartNATSCluster(t, 3)
	c.Nodes[1].Kill(t)
	c.Nodes[2].Kill(t)
	topo := Topology{Prefix: testenv.Name(t, "W")}
	// No deadline, as the commands call it: a JetStream call then has the
	// client's default timeout (5 s), which the outage outlasts.
	done := make(chan error, 1)
	go func() {
		done <- topo.Ensure(context.Background(), c.JS, StreamOptions{Replicas: 3, Wait: 2 * time.Minute})
	}()
	select {
	case err := <-done:
		t.Fatalf("Ensure returned while the cluster had no quorum: %v", err)
	case <-time.After(8 * time.Second):
	}
	c.Nodes[1].Restart(t)
	c.Nodes[2].Restart(t)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Ensure after the cluster came back: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Ensure still waiting 2 minutes after the cluster came back")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{topo.JobsStream(), topo.ResultsStream(), topo.DeadStream(), "KV_" + topo.RunsBucket(),
		"KV_" + topo.FailuresBucket(), "KV_" + topo.LeasesBucket(), "OBJ_" + topo.ManifestsBucket()} {
		s, err := c.JS.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info, err := s.Info(ctx); err != nil || info.Config.Replicas != 3 {
			t.Errorf("%s: %v, replicas %d, want 3", name, err, info.Config.Replicas)
		}
	}
	if _, err := topo.WorkerConsumer(ctx, c.JS, ConsumerOptions{}); err != nil {
		t.Fatal(err)
	}
	// A permanent error is not waited on.
	start := time.Now()
	if _, err := topo.WorkerConsumer(ctx, c.JS, ConsumerOptions{Pool: "no spaces allowed"}); err == nil {
		t.Fatal("a pool name with spaces was accepted")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a bad pool name took %s to fail", took)
	}
}
