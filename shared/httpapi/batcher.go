package httpapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/embedfleet/embedfleet/shared/search"
)

var errClosed = errors.New("httpapi: server is shutting down")

// batcher runs one model's inference for concurrent requests: the first
// request waiting opens a batch, which takes whatever else arrives within
// linger, up to max images, and runs as one call.
type batcher struct {
	m      search.Model
	max    int
	linger time.Duration
	reqs   chan *embedReq
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
	size   prometheus.Observer
}

type embedReq struct {
	px  []float32
	vec []float32
	err chan error // buffered: the batcher never blocks on a caller that left
}

func newBatcher(m search.Model, max int, linger time.Duration, size prometheus.Observer) *batcher {
	b := &batcher{m: m, max: max, linger: linger, reqs: make(chan *embedReq), quit: make(chan struct{}), done: make(chan struct{}), size: size}
	go b.run()
	return b
}

// embed returns the vector of one preprocessed image.
func (b *batcher) embed(ctx context.Context, px []float32) ([]float32, error) {
	req := &embedReq{px: px, vec: make([]float32, b.m.Spec().Dim), err: make(chan error, 1)}
	select {
	case b.reqs <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.quit:
		return nil, errClosed
	}
	select {
	case err := <-req.err:
		if err != nil {
			return nil, err
		}
		return req.vec, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *batcher) run() {
	defer close(b.done)
	in, dim := b.m.InputSize(), b.m.Spec().Dim
	px := make([]float32, 0, b.max*in)
	out := make([]float32, b.max*dim)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var batch []*embedReq
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.quit:
			return
		}
		timer.Reset(b.linger)
	collect:
		for len(batch) < b.max {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		px = px[:0]
		for _, r := range batch {
			px = append(px, r.px...)
		}
		n := len(batch)
		err := b.m.Embed(px, n, out[:n*dim])
		b.size.Observe(float64(n))
		for i, r := range batch {
			if err == nil {
				copy(r.vec, out[i*dim:(i+1)*dim])
			}
			r.err <- err
		}
	}
}

func (b *batcher) close() {
	b.once.Do(func() { close(b.quit) })
	<-b.done
}
