package engine

import "time"

// Clock makes the timers a Batcher lingers with; tests inject a fake one to
// decide when a linger ends.
type Clock interface {
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Batcher uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// RealClock is the time package's clock.
type RealClock struct{}

// NewTimer returns a time.Timer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }
