package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// fakeEncoder embeds a one-value input [x] as [x, 0], so that each caller
// can tell its own vector (it does not normalise). Calls are recorded;
// gate, when set, holds every call until it receives.
type fakeEncoder struct {
	mu      sync.Mutex
	calls   []int // batch sizes
	err     error
	gate    chan struct{}
	entered chan int
	running atomic.Int32
	maxRun  atomic.Int32
}

func (f *fakeEncoder) Spec() embed.Spec { return embed.Spec{Name: "fake", Dim: 2} }
func (f *fakeEncoder) InputSize() int   { return 1 }

func (f *fakeEncoder) Embed(in []float32, n int, out []float32) error {
	r := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		m := f.maxRun.Load()
		if r <= m || f.maxRun.CompareAndSwap(m, r) {
			break
		}
	}
	if f.entered != nil {
		f.entered <- n
	}
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	f.calls = append(f.calls, n)
	f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	for i := range n {
		out[2*i], out[2*i+1] = in[i], 0
	}
	return nil
}

func (f *fakeEncoder) batches() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// fakeClock hands each timer to the test, which fires it.
type fakeClock struct{ made chan *fakeTimer }

func newFakeClock() *fakeClock { return &fakeClock{made: make(chan *fakeTimer, 64)} }

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: make(chan time.Time, 1), d: d}
	c.made <- t
	return t
}

type fakeTimer struct {
	c       chan time.Time
	d       time.Duration
	stopped atomic.Bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() bool          { return !t.stopped.Swap(true) }
func (t *fakeTimer) fire() {
	if !t.stopped.Load() {
		t.c <- time.Time{}
	}
}

// embedAsync runs b.Embed of the one-value input x in a goroutine.
func embedAsync(ctx context.Context, b *Batcher[float32], x float32) <-chan Result {
	ch := make(chan Result, 1)
	go func() {
		v, err := b.Embed(ctx, []float32{x})
		r := Result{Err: err}
		if err == nil {
			r.Vec = v[0]
		}
		ch <- r
	}()
	return ch
}

func TestFullBatchRunsAtOnce(t *testing.T) {
	enc := &fakeEncoder{}
	clk := newFakeClock()
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 4, Linger: time.Hour, Clock: clk})
	defer b.Close()
	var chans []<-chan Result
	for i := range 4 {
		chans = append(chans, embedAsync(context.Background(), b, float32(i+1)))
	}
	for i, ch := range chans {
		r := <-ch
		if r.Err != nil || r.Vec[0] != float32(i+1) {
			t.Fatalf("caller %d: %v %v, want its own vector", i, r.Vec, r.Err)
		}
	}
	if got := enc.batches(); !slices.Equal(got, []int{4}) {
		t.Fatalf("encoder calls %v, want one of 4 (the linger never ended)", got)
	}
}

func TestLingerFlushesAPartialBatch(t *testing.T) {
	enc := &fakeEncoder{}
	clk := newFakeClock()
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 8, Linger: 5 * time.Millisecond, Clock: clk})
	defer b.Close()
	ch := embedAsync(context.Background(), b, 3)
	timer := <-clk.made // the batch's first input started its linger
	if timer.d != 5*time.Millisecond {
		t.Fatalf("linger %v, want 5ms", timer.d)
	}
	select {
	case r := <-ch:
		t.Fatalf("answered before the linger ended: %+v", r)
	default:
	}
	if got := enc.batches(); len(got) != 0 {
		t.Fatalf("encoder ran %v before the linger ended", got)
	}
	timer.fire()
	if r := <-ch; r.Err != nil || r.Vec[0] != 3 {
		t.Fatalf("%+v", r)
	}
	if got := enc.batches(); !slices.Equal(got, []int{1}) {
		t.Fatalf("encoder calls %v, want one of 1", got)
	}
}

func TestCallerThatCancelsIsLeftOut(t *testing.T) {
	enc := &fakeEncoder{gate: make(chan struct{}), entered: make(chan int, 4)}
	clk := newFakeClock()
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 1, Linger: time.Hour, Clock: clk})
	first := embedAsync(context.Background(), b, 1)
	<-clk.made
	<-enc.entered // the first batch holds the only encoder slot
	ctx, cancel := context.WithCancel(context.Background())
	second := embedAsync(ctx, b, 2)
	<-clk.made // queued, waiting for the slot
	cancel()
	if r := <-second; !errors.Is(r.Err, context.Canceled) {
		t.Fatalf("a cancelled caller got %+v, want context.Canceled at once", r)
	}
	close(enc.gate)
	if r := <-first; r.Err != nil || r.Vec[0] != 1 {
		t.Fatalf("first caller: %+v", r)
	}
	b.Close() // every batch has run
	if got := enc.batches(); !slices.Equal(got, []int{1}) {
		t.Fatalf("encoder calls %v: the cancelled input was embedded", got)
	}
}

func TestErrorReachesEveryCallerOfItsBatch(t *testing.T) {
	boom := errors.New("boom")
	enc := &fakeEncoder{err: boom}
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 3, Linger: time.Hour, Clock: newFakeClock()})
	defer b.Close()
	var chans []<-chan Result
	for i := range 3 {
		chans = append(chans, embedAsync(context.Background(), b, float32(i)))
	}
	for i, ch := range chans {
		if r := <-ch; !errors.Is(r.Err, boom) {
			t.Errorf("caller %d: %+v, want the encoder's error", i, r)
		}
	}
	if got := enc.batches(); !slices.Equal(got, []int{3}) {
		t.Fatalf("encoder calls %v, want one of 3", got)
	}
}

func TestConcurrencyCap(t *testing.T) {
	enc := &fakeEncoder{gate: make(chan struct{}), entered: make(chan int, 8)}
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 1, Concurrency: 2, Linger: time.Hour, Clock: newFakeClock()})
	var chans []<-chan Result
	for i := range 5 {
		chans = append(chans, embedAsync(context.Background(), b, float32(i)))
	}
	<-enc.entered
	<-enc.entered // two calls run; the others wait for a slot
	for range 5 {
		enc.gate <- struct{}{}
	}
	for _, ch := range chans {
		if r := <-ch; r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	b.Close()
	if m := enc.maxRun.Load(); m != 2 {
		t.Fatalf("%d encoder calls ran at once, want the cap of 2", m)
	}
	if got := enc.batches(); len(got) != 5 {
		t.Fatalf("encoder calls %v, want 5 of 1", got)
	}
}

// TestCloseRunsWhatIsQueued: Close does not wait out the linger, answers
// every input already taken, then refuses new ones.
func TestCloseRunsWhatIsQueued(t *testing.T) {
	enc := &fakeEncoder{}
	clk := newFakeClock()
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 8, Linger: time.Hour, Clock: clk})
	ch := embedAsync(context.Background(), b, 7)
	<-clk.made
	b.Close()
	if r := <-ch; r.Err != nil || r.Vec[0] != 7 {
		t.Fatalf("queued caller: %+v", r)
	}
	if _, err := b.Embed(context.Background(), []float32{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if err := b.Submit(context.Background(), []float32{1}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v, want ErrClosed", err)
	}
	if _, open := <-b.Results(); open {
		t.Fatal("Results is still open after Close")
	}
}

// TestStreamingKeepsBatchesTogether: Submit's results come out one slice
// per batch, with their tags, in the order submitted.
func TestStreamingKeepsBatchesTogether(t *testing.T) {
	enc := &fakeEncoder{}
	clk := newFakeClock()
	b := NewBatcher[float32](enc, BatchConfig{MaxBatch: 3, Linger: time.Hour, Clock: clk})
	for i := range 5 {
		in := b.NewInput()
		in[0] = float32(i)
		if err := b.Submit(context.Background(), in, i); err != nil {
			t.Fatal(err)
		}
	}
	first := <-b.Results()
	<-clk.made
	(<-clk.made).fire() // the second batch, of 2, lingers until now
	second := <-b.Results()
	for k, batch := range [][]Result{first, second} {
		for j, r := range batch {
			i := 3*k + j
			if r.Err != nil || r.Tag != i || r.Vec[0] != float32(i) {
				t.Fatalf("batch %d item %d: %+v, want tag and vector %d", k, j, r, i)
			}
		}
	}
	if len(first) != 3 || len(second) != 2 {
		t.Fatalf("batches of %d and %d, want 3 and 2", len(first), len(second))
	}
	b.Close()
}

func TestWrongInputSize(t *testing.T) {
	b := NewBatcher[float32](&fakeEncoder{}, BatchConfig{Clock: newFakeClock()})
	defer b.Close()
	if _, err := b.Embed(context.Background(), []float32{1, 2}); err == nil {
		t.Fatal("an input of the wrong size was taken")
	}
}
