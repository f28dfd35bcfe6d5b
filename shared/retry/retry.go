// Package retry is embedfleet's one retry loop: a call is repeated while
// its error is one that may pass on its own, with a doubling, jittered
// delay, bounded by a number of attempts, a total wait, or both, and
// always by the context.
//
//	err := retry.Do(ctx, retry.Policy{Attempts: 5, First: 100 * time.Millisecond}, isTransient,
//		func(ctx context.Context) error { return call(ctx) })
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy says how long to keep trying. Zero fields have no bound (an
// Attempts and a Wait of 0 together mean a single call).
type Policy struct {
	Attempts int           // at most this many calls
	Wait     time.Duration // no new call once this has passed since the first
	First    time.Duration // the delay after the first failure, doubled after each; default 100 ms
	Max      time.Duration // the largest delay
	PerCall  time.Duration // each call's own deadline, within ctx's
}

// Do calls op until it succeeds, fails with an error transient does not
// accept, ctx ends, or the policy's bounds are reached, and returns the
// last error. When the Wait ran out the error says so; when ctx ended
// it is joined with ctx's error.
func Do(ctx context.Context, p Policy, transient func(error) bool, op func(context.Context) error) error {
	if p.Attempts <= 0 && p.Wait <= 0 {
		p.Attempts = 1
	}
	delay := p.First
	if delay <= 0 {
		delay = 100 * time.Millisecond
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := call(ctx, p.PerCall, op)
		if err == nil || !transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if p.Attempts > 0 && attempt >= p.Attempts {
			return err
		}
		wait := delay + rand.N(delay/2+1) // jitter: callers that failed together spread out
		if p.Wait > 0 && time.Since(start)+wait > p.Wait {
			return fmt.Errorf("%w (still failing after %s)", err, p.Wait)
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		delay *= 2
		if p.Max > 0 {
			delay = min(delay, p.Max)
		}
	}
}

func call(ctx context.Context, bound time.Duration, op func(context.Context) error) error {
	if bound <= 0 {
		return op(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	return op(ctx)
}
