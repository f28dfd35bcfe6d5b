package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func (w *Worker) source(uri string) (objstore.Source, error) {
	if s, ok := w.sources.Load(uri); ok {
		return s.(objstore.Source), nil
	}
	s, err := w.cfg.OpenSource(uri)
	if err != nil {
		return nil, err
	}
	w.sources.Store(uri, s)
	return s, nil
}

// item is one job item after preprocessing.
type item struct {
	key           string
	etag          string
	size          int64
	width, height int
	failure       string // permanent failure reason; empty when ok
	kind          string // the failure's kind, for metrics
}

// jobState tracks one job's items through the batchers: pending counts the
// (item, model) pairs not yet stored; the first error wins.
type jobState struct {
	job    jobs.Job
	src    objstore.Source
	models []int // indexes into Config.Models of the models this job asks for
	items  []item

	mu      sync.Mutex
	pending int
	err     error
	done    chan struct{}
}

func (js *jobState) finish(n int, err error) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if err != nil && js.err == nil {
		js.err = err
	}
	js.pending -= n
	if js.pending == 0 {
		close(js.done)
	}
}

// process embeds a job's items into every model's collection and returns
// its result and the kinds of its failures. It returns errTransient for
// trouble worth retrying; permanent per-item failures are in the result.
func (w *Worker) process(ctx context.Context, job jobs.Job, batchers []*batcher) (jobs.Result, []string, error) {
	res := jobs.Result{Schema: jobs.Schema, Run: job.Run, Seq: job.Seq, Worker: w.cfg.Name}
	// The models this job asks for (an incremental run may ask for a subset).
	var use []int
	for _, name := range job.Models {
		if _, ok := w.cols[name]; !ok {
			return res, nil, fmt.Errorf("worker %s does not serve model %s (it has %v)", w.cfg.Name, name, w.modelNames())
		}
		for mi, m := range w.cfg.Models {
			if m.Spec().Name == name {
				use = append(use, mi)
			}
		}
	}
	src, err := w.source(job.Source)
	if err != nil {
		return res, nil, fmt.Errorf("open source %s: %w", job.Source, err)
	}
	nm := len(use)
	st := &jobState{job: job, src: src, models: use, items: make([]item, len(job.Items)), pending: len(job.Items) * nm, done: make(chan struct{})}
	if st.pending == 0 {
		close(st.done)
	}
	for i, it := range job.Items {
		st.items[i] = item{key: it.Key, etag: it.ETag, size: it.Size}
		select {
		case w.fetchSem <- struct{}{}:
		case <-ctx.Done():
			st.finish((len(job.Items)-i)*nm, errTransient{ctx.Err()})
			goto wait
		}
		go func() {
			defer func() { <-w.fetchSem }()
			w.prepare(ctx, st, i, batchers)
		}()
	}
wait:
	select {
	case <-st.done:
	case <-ctx.Done():
		return res, nil, errTransient{ctx.Err()}
	}
	if st.err != nil {
		return res, nil, st.err
	}
	var kinds []string
	for _, it := range st.items {
		if it.failure != "" {
			res.Failed = append(res.Failed, jobs.Failure{Key: it.key, Reason: it.failure, Kind: it.kind})
			kinds = append(kinds, it.kind)
		} else {
			res.Stored++
		}
	}
	return res, kinds, nil
}

// prepare fetches, decodes and preprocesses item i of st and hands it to
// every model's batcher. A permanent problem is recorded in the item; a
// transient one fails the job.
func (w *Worker) prepare(ctx context.Context, st *jobState, i int, batchers []*batcher) {
	t0 := time.Now()
	nm := len(st.models)
	it := &st.items[i]
	maxBytes := w.cfg.Limits.MaxBytes
	if it.size > maxBytes {
		// The listing already says it is too large: not read at all.
		it.failure, it.kind = fmt.Sprintf("%v: %d bytes, limit %d (--max-object-mib)", imageprep.ErrTooLarge, it.size, maxBytes), jobs.KindTooLarge
		st.finish(nm, nil)
		return
	}
	// The bytes this object may hold until its decode ends.
	cost := it.size
	if cost <= 0 {
		cost = maxBytes
	}
	cost = min(cost, w.cfg.FetchBytes)
	if err := w.bytesSem.Acquire(ctx, cost); err != nil {
		st.finish(nm, errTransient{err})
		return
	}
	held := true
	release := func() {
		if held {
			w.bytesSem.Release(cost)
			held = false
		}
	}
	defer release()
	data, err := st.src.Get(ctx, it.key, maxBytes)
	switch {
	case err == nil:
	case errors.Is(err, objstore.ErrTransient), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		st.finish(nm, errTransient{err})
		return
	default: // not found, too large, access denied
		it.failure, it.kind = err.Error(), reasonOf(err)
		st.finish(nm, nil)
		return
	}
	t := <-w.tools
	img, _, err := t.dec.Decode(data)
	release()
	if err != nil {
		w.tools <- t
		it.failure, it.kind = err.Error(), reasonOf(err)
		st.finish(nm, nil)
		return
	}
	it.width, it.height = img.Width, img.Height
	pxs := make([]*[]float32, nm)
	for k, mi := range st.models {
		pxs[k] = w.pools[mi].Get().(*[]float32)
		if err := t.pps[mi].Run(img, *pxs[k]); err != nil {
			for j := 0; j <= k; j++ {
				w.pools[st.models[j]].Put(pxs[j])
			}
			w.tools <- t
			it.failure, it.kind = err.Error(), reasonOf(err)
			st.finish(nm, nil)
			return
		}
	}
	w.tools <- t
	w.cfg.Metrics.observe("prepare", "", time.Since(t0).Seconds())
	for k, mi := range st.models {
		select {
		case batchers[mi].in <- entry{st: st, idx: i, px: pxs[k]}:
		case <-ctx.Done():
			for j := k; j < nm; j++ {
				st.finish(1, errTransient{ctx.Err()})
			}
			return
		}
	}
}

// entry is one preprocessed image on its way to a model.
type entry struct {
	st  *jobState
	idx int
	px  *[]float32
}

// batcher runs one model over images from any job: it flushes when a batch
// is full or Linger has passed since the batch's first image. A flushed
// batch's vectors go to Milvus from a second goroutine while the model runs
// the next batch, so the engine does not wait on upserts; at most
// upsertsQueued batches wait behind the one being written.
type batcher struct {
	w     *Worker
	mi    int
	in    chan entry
	buf   []float32
	out   []float32
	ents  []entry
	store chan stored
}

// stored is an embedded batch on its way to Milvus.
type stored struct {
	rows []vecstore.Row
	ents []entry
}

const upsertsQueued = 1

func (w *Worker) newBatcher(mi int) *batcher {
	m := w.cfg.Models[mi]
	bs := w.cfg.BatchSize
	return &batcher{w: w, mi: mi, in: make(chan entry, bs), buf: make([]float32, bs*m.InputSize()),
		out: make([]float32, bs*m.Spec().Dim), ents: make([]entry, 0, bs), store: make(chan stored, upsertsQueued)}
}

func (b *batcher) run(ctx context.Context) {
	upserted := make(chan struct{})
	go func() { defer close(upserted); b.upsertLoop(ctx) }()
	defer func() { close(b.store); <-upserted }()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	size := b.w.cfg.Models[b.mi].InputSize()
	for {
		select {
		case e := <-b.in:
			n := len(b.ents)
			copy(b.buf[n*size:(n+1)*size], *e.px)
			b.w.pools[b.mi].Put(e.px)
			b.ents = append(b.ents, entry{st: e.st, idx: e.idx})
			if len(b.ents) == 1 {
				timer.Reset(b.w.cfg.Linger)
			}
			if len(b.ents) == b.w.cfg.BatchSize {
				timer.Stop()
				b.flush(ctx)
			}
		case <-timer.C:
			b.flush(ctx)
		case <-ctx.Done():
			// Jobs still waiting on these entries are being handed back.
			for _, e := range b.ents {
				e.st.finish(1, errTransient{ctx.Err()})
			}
			return
		}
	}
}

// flush embeds the batch and hands it to the upserter; the jobs of its
// entries count them done once the upsert has answered.
func (b *batcher) flush(ctx context.Context) {
	n := len(b.ents)
	if n == 0 {
		return
	}
	ents := b.ents
	b.ents = make([]entry, 0, b.w.cfg.BatchSize)
	rows, err := b.embed(n, ents)
	if err != nil {
		for _, e := range ents {
			e.st.finish(1, err)
		}
		return
	}
	select {
	case b.store <- stored{rows: rows, ents: ents}:
	case <-ctx.Done():
		for _, e := range ents {
			e.st.finish(1, errTransient{ctx.Err()})
		}
	}
}

func (b *batcher) embed(n int, ents []entry) ([]vecstore.Row, error) {
	w := b.w
	m := w.cfg.Models[b.mi]
	spec := m.Spec()
	sz, dim := m.InputSize(), spec.Dim
	t0 := time.Now()
	if err := m.Embed(b.buf[:n*sz], n, b.out[:n*dim]); err != nil {
		return nil, fmt.Errorf("embed %s: %w", spec.Name, err)
	}
	w.cfg.Metrics.observe("embed", spec.Name, time.Since(t0).Seconds())
	w.cfg.Metrics.embedded(spec.Name, n, w.cfg.BatchSize)
	rows := make([]vecstore.Row, n)
	vecs := make([]float32, n*dim)
	copy(vecs, b.out[:n*dim])
	for j, e := range ents {
		it := e.st.items[e.idx]
		uri := e.st.src.ObjectURI(it.key)
		rows[j] = vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: it.etag, Size: it.size, Width: it.width, Height: it.height,
			Vector: vecs[j*dim : (j+1)*dim : (j+1)*dim]}
	}
	return rows, nil
}

// upsertLoop writes embedded batches in order until the batcher closes
// its channel; each entry's job learns the outcome.
func (b *batcher) upsertLoop(ctx context.Context) {
	spec := b.w.cfg.Models[b.mi].Spec()
	col := b.w.cols[spec.Name]
	for s := range b.store {
		t0 := time.Now()
		err := col.Upsert(ctx, s.rows)
		b.w.cfg.Metrics.observe("upsert", spec.Name, time.Since(t0).Seconds())
		if err != nil && errors.Is(err, vecstore.ErrUnavailable) {
			err = errTransient{err}
		}
		for _, e := range s.ents {
			e.st.finish(1, err)
		}
	}
}
