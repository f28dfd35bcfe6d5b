package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrStalled is the cause of a read cut off because no byte arrived for its
// idle timeout.
var ErrStalled = errors.New("no data")

// Idle watches a download: its context is cancelled, with a cause that
// wraps ErrStalled, when nothing arrives for d, headers included (a server
// that sends a byte now and then is held to d per byte, not forever). Wrap
// the body with Reader; Stop when done.
type Idle struct {
	t *time.Timer
	d time.Duration
}

// WatchIdle returns ctx cut off after d without progress, and its Idle.
func WatchIdle(ctx context.Context, d time.Duration, what string) (context.Context, *Idle, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	cause := fmt.Errorf("%w for %s: %s", ErrStalled, d, what)
	i := &Idle{t: time.AfterFunc(d, func() { cancel(cause) }), d: d}
	return ctx, i, func() { i.t.Stop(); cancel(nil) }
}

// Reader returns r, each byte read from it pushing the deadline back.
func (i *Idle) Reader(r io.Reader) io.Reader { return &idleReader{r: r, i: i} }

// Stalled returns the ErrStalled cause of ctx (one from WatchIdle), or nil.
func Stalled(ctx context.Context) error {
	if c := context.Cause(ctx); errors.Is(c, ErrStalled) {
		return c
	}
	return nil
}

type idleReader struct {
	r io.Reader
	i *Idle
}

func (r *idleReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.i.t.Reset(r.i.d)
	}
	return n, err
}
