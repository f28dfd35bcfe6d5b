package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrClosed is returned for work submitted to a closed Batcher.
var ErrClosed = errors.New("engine: batcher is closed")

// Elem is the element type of an encoder's input: float32 pixels or int64
// token ids.
type Elem interface{ float32 | int64 }

// BatchConfig tunes a Batcher. The zero value works.
type BatchConfig struct {
	// MaxBatch is the most inputs in one encoder call; default 32.
	MaxBatch int
	// Linger is how long a batch that is not full waits, from its first
	// input, for more; default 5 ms.
	Linger time.Duration
	// Concurrency is the most encoder calls running at once; default 1.
	// While they all run, the next batch keeps filling.
	Concurrency int
	// ResultsBuffer is how many batches of the streaming form's results
	// wait for a slow reader of Results before the batches stop running;
	// default Concurrency. A reader that groups what has come out (the
	// worker's group commit) sets it higher.
	ResultsBuffer int
	// Clock times the linger; default the real clock. Tests inject one.
	Clock Clock
	// Observe, when set, is called after every encoder call with the
	// batch size, how long the call took and its error.
	Observe func(n int, took time.Duration, err error)
}

func (c BatchConfig) withDefaults() BatchConfig {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 32
	}
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.ResultsBuffer <= 0 {
		c.ResultsBuffer = c.Concurrency
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	return c
}

// Result is the outcome of one input: its vector (L2-normalised, owned by
// the receiver) or why there is none. Tag is what the input was submitted
// with.
type Result struct {
	Tag any
	Vec []float32
	Err error
}

// Batcher packs inputs from many goroutines into batches for one encoder:
// a batch runs when it is full, or Linger after its first input arrived,
// as soon as fewer than Concurrency calls are running.
//
// It has two forms over one queue. The call form, [Batcher.Embed], returns
// the vectors to the caller. The streaming form, [Batcher.Submit], hands
// each batch's results, in one slice, to [Batcher.Results], so that a
// consumer (the worker's upserter) keeps the batch together.
//
// Submitted inputs belong to the Batcher: it copies them into the batch
// tensor and recycles them for [Batcher.NewInput].
type Batcher[E Elem] struct {
	enc   Encoder[E]
	cfg   BatchConfig
	size  int
	dim   int
	in    chan item[E]
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once
	slots chan struct{}
	out   chan []Result
	runs  sync.WaitGroup
	pool  sync.Pool // *[]E of size
	bufs  sync.Pool // *[]E of MaxBatch*size
}

type item[E Elem] struct {
	ctx  context.Context
	in   []E
	tag  any
	wait chan Result // the call form's; nil for the streaming form
}

// NewBatcher starts a Batcher for enc. Close it to stop it.
func NewBatcher[E Elem](enc Encoder[E], cfg BatchConfig) *Batcher[E] {
	cfg = cfg.withDefaults()
	b := &Batcher[E]{enc: enc, cfg: cfg, size: enc.InputSize(), dim: enc.Spec().Dim,
		in: make(chan item[E]), quit: make(chan struct{}), done: make(chan struct{}),
		slots: make(chan struct{}, cfg.Concurrency), out: make(chan []Result, cfg.ResultsBuffer)}
	b.pool.New = func() any { s := make([]E, b.size); return &s }
	b.bufs.New = func() any { s := make([]E, cfg.MaxBatch*b.size); return &s }
	go b.loop()
	return b
}

// Encoder returns the encoder the Batcher runs.
func (b *Batcher[E]) Encoder() Encoder[E] { return b.enc }

// Config returns the Batcher's settings, defaults filled in.
func (b *Batcher[E]) Config() BatchConfig { return b.cfg }

// NewInput returns a zeroed input slice of the encoder's InputSize, from
// the pool that submitted inputs return to.
func (b *Batcher[E]) NewInput() []E {
	s := *b.pool.Get().(*[]E)
	clear(s)
	return s
}

// Submit queues one input for the streaming form; its Result, carrying tag,
// comes out of Results with the rest of its batch. It blocks while the
// queue is full, and fails only when ctx ends first or the Batcher is
// closed; an input whose ctx ends before its batch runs comes out with
// ctx's error.
func (b *Batcher[E]) Submit(ctx context.Context, in []E, tag any) error {
	return b.send(ctx, item[E]{ctx: ctx, in: in, tag: tag})
}

// Results delivers the streaming form's results, one slice per batch, and
// is closed by Close once every submitted input has come out. Read it
// whenever Submit is used: a batch waits until its results are taken.
func (b *Batcher[E]) Results() <-chan []Result { return b.out }

// Embed is the call form: it embeds inputs (each of InputSize values) and
// returns their vectors in order. Inputs share batches with every other
// caller's. When ctx ends first it returns ctx's error at once; inputs not
// yet run are then left out of their batch.
func (b *Batcher[E]) Embed(ctx context.Context, inputs ...[]E) ([][]float32, error) {
	for _, in := range inputs {
		if len(in) != b.size {
			return nil, fmt.Errorf("embed %s: an input of %d values, want %d", b.enc.Spec().Name, len(in), b.size)
		}
	}
	waits := make([]chan Result, len(inputs))
	for i, in := range inputs {
		waits[i] = make(chan Result, 1) // the batcher never blocks on a caller that left
		if err := b.send(ctx, item[E]{ctx: ctx, in: in, wait: waits[i]}); err != nil {
			return nil, err
		}
	}
	vecs := make([][]float32, len(inputs))
	for i, w := range waits {
		select {
		case r := <-w:
			if r.Err != nil {
				return nil, r.Err
			}
			vecs[i] = r.Vec
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return vecs, nil
}

func (b *Batcher[E]) send(ctx context.Context, it item[E]) error {
	if len(it.in) != b.size {
		return fmt.Errorf("embed %s: an input of %d values, want %d", b.enc.Spec().Name, len(it.in), b.size)
	}
	select {
	case <-b.quit:
		return ErrClosed
	default:
	}
	select {
	case b.in <- it:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.quit:
		return ErrClosed
	}
}

// Close stops taking inputs, runs what is queued without waiting out the
// linger, waits for every batch to finish and closes Results. Submit and
// Embed fail with ErrClosed afterwards.
func (b *Batcher[E]) Close() {
	b.once.Do(func() { close(b.quit) })
	<-b.done
}

// loop collects batches. A batch is ready when full or when its linger has
// passed; a ready batch that is not full keeps taking inputs until an
// encoder slot is free.
func (b *Batcher[E]) loop() {
	defer close(b.done)
	var (
		pending []item[E]
		timer   Timer
		ready   bool
	)
	for {
		in := b.in
		if len(pending) == b.cfg.MaxBatch {
			in = nil
		}
		var slots chan struct{}
		if ready {
			slots = b.slots
		}
		var expired <-chan time.Time
		if timer != nil {
			expired = timer.C()
		}
		select {
		case it := <-in:
			pending = append(pending, it)
			if len(pending) == 1 {
				timer = b.cfg.Clock.NewTimer(b.cfg.Linger)
			}
			if len(pending) == b.cfg.MaxBatch {
				ready = true
				if timer != nil {
					timer.Stop()
					timer = nil
				}
			}
		case <-expired:
			timer, ready = nil, true
		case slots <- struct{}{}:
			b.start(pending)
			pending, ready = nil, false
		case <-b.quit:
			if timer != nil {
				timer.Stop()
			}
			// Inputs whose send raced the close are still taken.
			for {
				select {
				case it := <-b.in:
					pending = append(pending, it)
					continue
				default:
				}
				break
			}
			for len(pending) > 0 {
				n := min(len(pending), b.cfg.MaxBatch)
				b.slots <- struct{}{}
				b.start(pending[:n:n])
				pending = pending[n:]
			}
			b.runs.Wait()
			close(b.out)
			return
		}
	}
}

// start runs a batch in its own goroutine; it holds an encoder slot.
func (b *Batcher[E]) start(batch []item[E]) {
	b.runs.Add(1)
	go func() {
		defer b.runs.Done()
		defer func() { <-b.slots }()
		b.run(batch)
	}()
}

func (b *Batcher[E]) run(batch []item[E]) {
	results := make([]Result, len(batch))
	live := make([]int, 0, len(batch)) // the inputs whose callers still wait
	for i, it := range batch {
		results[i].Tag = it.tag
		if err := it.ctx.Err(); err != nil {
			results[i].Err = err
			b.recycle(it.in)
			continue
		}
		live = append(live, i)
	}
	if n := len(live); n > 0 {
		bufp := b.bufs.Get().(*[]E)
		buf := (*bufp)[:n*b.size]
		for j, i := range live {
			copy(buf[j*b.size:(j+1)*b.size], batch[i].in)
			b.recycle(batch[i].in)
		}
		out := make([]float32, n*b.dim)
		t0 := time.Now()
		err := b.enc.Embed(buf, n, out)
		took := time.Since(t0)
		b.bufs.Put(bufp)
		if b.cfg.Observe != nil {
			b.cfg.Observe(n, took, err)
		}
		for j, i := range live {
			if err != nil {
				results[i].Err = err
			} else {
				results[i].Vec = out[j*b.dim : (j+1)*b.dim : (j+1)*b.dim]
			}
		}
	}
	var stream []Result
	for i, it := range batch {
		if it.wait != nil {
			it.wait <- results[i]
		} else {
			stream = append(stream, results[i])
		}
	}
	if len(stream) > 0 {
		b.out <- stream
	}
}

func (b *Batcher[E]) recycle(in []E) {
	if len(in) == b.size && cap(in) == b.size {
		b.pool.Put(&in)
	}
}
