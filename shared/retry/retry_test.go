package retry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

var errPass = errors.New("may pass")

func transient(err error) bool { return errors.Is(err, errPass) }

func TestDoAttempts(t *testing.T) {
	ctx := context.Background()
	calls := 0
	err := Do(ctx, Policy{Attempts: 5, First: time.Millisecond}, transient, func(context.Context) error {
		calls++
		if calls < 3 {
			return errPass
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("transient twice then ok: %v after %d calls, want nil after 3", err, calls)
	}
	calls = 0
	err = Do(ctx, Policy{Attempts: 4, First: time.Millisecond}, transient, func(context.Context) error { calls++; return errPass })
	if !errors.Is(err, errPass) || calls != 4 {
		t.Fatalf("always transient: %v after %d calls, want the error after 4", err, calls)
	}
	calls = 0
	bad := errors.New("permanent")
	if err := Do(ctx, Policy{Attempts: 4}, transient, func(context.Context) error { calls++; return bad }); err != bad || calls != 1 {
		t.Fatalf("permanent: %v after %d calls, want it at once", err, calls)
	}
	calls = 0
	if err := Do(ctx, Policy{}, transient, func(context.Context) error { calls++; return errPass }); err == nil || calls != 1 {
		t.Fatalf("no bounds: %v after %d calls, want one call", err, calls)
	}
}

func TestDoWait(t *testing.T) {
	calls := 0
	start := time.Now()
	err := Do(context.Background(), Policy{Wait: 600 * time.Millisecond, First: 50 * time.Millisecond, Max: 100 * time.Millisecond, PerCall: time.Second},
		transient, func(ctx context.Context) error {
			calls++
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a call without its own deadline")
			}
			return errPass
		})
	if !errors.Is(err, errPass) || !strings.Contains(err.Error(), "still failing after 600ms") || calls < 3 {
		t.Fatalf("past its wait: %v after %d calls, want the last error, said to persist, after at least 3", err, calls)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a wait of 600 ms took %s", took)
	}
}

func TestDoContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Do(ctx, Policy{Attempts: 10}, transient, func(context.Context) error { calls++; cancel(); return errPass })
	if !errors.Is(err, errPass) || !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("ctx ended: %v after %d calls, want both errors after 1", err, calls)
	}
}
