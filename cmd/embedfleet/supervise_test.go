package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSupervise: a failing component ends main with its error; main's end
// stops every component; a component that returns on its own is an error;
// the command's context stops them all.
func TestSupervise(t *testing.T) {
	boom := errors.New("boom")
	waitCtx := func(ctx context.Context) error { <-ctx.Done(); return nil }

	var mainSaw error
	err := supervise(context.Background(), func(ctx context.Context) error {
		<-ctx.Done()
		mainSaw = context.Cause(ctx)
		return ctx.Err()
	}, component{"metrics", func(context.Context) error { return boom }}, component{"other", waitCtx})
	if !errors.Is(err, boom) || err.Error() != "metrics: boom" || !errors.Is(mainSaw, boom) {
		t.Fatalf("a failing component: %v (main saw %v), want metrics: boom", err, mainSaw)
	}

	stopped := make(chan struct{})
	err = supervise(context.Background(), func(context.Context) error { return nil },
		component{"worker", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return ctx.Err() }})
	select {
	case <-stopped:
	default:
		t.Fatal("main returned, the component was not stopped")
	}
	if err != nil {
		t.Fatalf("main done, component stopped: %v, want nil (a component's shutdown error is not a failure)", err)
	}

	err = supervise(context.Background(), waitCtx, component{"server", func(context.Context) error { return nil }})
	if !errors.Is(err, errStoppedEarly) {
		t.Fatalf("a component that stops on its own: %v, want errStoppedEarly", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := supervise(ctx, waitCtx, component{"w", waitCtx}); err != nil {
		t.Fatalf("the command's context ended: %v, want nil", err)
	}
}
