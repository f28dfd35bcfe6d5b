package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/embedfleet/embedfleet/shared/engine"
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
	sha256        string // hex sha256 of the object's bytes
	failure       string // permanent failure reason; empty when ok
	kind          string // the failure's kind, for metrics
}

// jobState tracks one job's items through the batchers: pending counts the
// (item, model) pairs not yet stored; the first error wins.
type jobState struct {
	job    jobs.Job
	src    objstore.Source
	models []int                  // indexes into Config.Models of the models this job asks for
	cols   []*vecstore.Collection // the collection each of models writes to (its set's)
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
func (w *Worker) process(ctx context.Context, job jobs.Job, batchers []*engine.Batcher[float32]) (jobs.Result, []string, error) {
	res := jobs.Result{Schema: jobs.Schema, Run: job.Run, Seq: job.Seq, Worker: w.cfg.Name}
	// The models this job asks for (an incremental run may ask for a
	// subset), each as a target: a model, or a set of a model's vectors
	// (vecstore.Target) written to that set's collection.
	var use []int
	var cols []*vecstore.Collection
	for _, target := range job.Models {
		name, set := vecstore.SplitTarget(target)
		mi := slices.IndexFunc(w.cfg.Models, func(m engine.ImageEncoder) bool { return m.Spec().Name == name })
		if mi < 0 {
			return res, nil, fmt.Errorf("worker %s does not serve model %s (it has %v)", w.cfg.Name, name, w.modelNames())
		}
		if want, have := job.Versions[target], w.cfg.Models[mi].Spec().Version; want != "" && want != have {
			// A job of another fleet (its run was published for this
			// worker's pool with another version): hand it back, never
			// write its vectors with this version.
			return res, nil, errTransient{fmt.Errorf("job %d of run %s wants %s version %s; worker %s has %s (start workers of each version in their own --pool)",
				job.Seq, job.Run, name, vecstore.VersionTag(want), w.cfg.Name, vecstore.VersionTag(have))}
		}
		col, err := w.collection(ctx, mi, set)
		if err != nil {
			return res, nil, err
		}
		use, cols = append(use, mi), append(cols, col)
	}
	src, err := w.source(job.Source)
	if err != nil {
		return res, nil, fmt.Errorf("open source %s: %w", job.Source, err)
	}
	nm := len(use)
	st := &jobState{job: job, src: src, models: use, cols: cols, items: make([]item, len(job.Items)), pending: len(job.Items) * nm, done: make(chan struct{})}
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
func (w *Worker) prepare(ctx context.Context, st *jobState, i int, batchers []*engine.Batcher[float32]) {
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
	sum := sha256.Sum256(data)
	it.sha256 = hex.EncodeToString(sum[:])
	pxs := make([][]float32, nm)
	for k, mi := range st.models {
		pxs[k] = batchers[mi].NewInput()
	}
	width, height, err := w.prep.Prepare(data, st.models, pxs, release)
	if err != nil {
		it.failure, it.kind = err.Error(), reasonOf(err)
		st.finish(nm, nil)
		return
	}
	it.width, it.height = width, height
	w.cfg.Metrics.observe("prepare", "", time.Since(t0).Seconds())
	for k, mi := range st.models {
		if err := batchers[mi].Submit(ctx, pxs[k], entry{st: st, idx: i, col: st.cols[k]}); err != nil {
			st.finish(nm-k, errTransient{err})
			return
		}
	}
}

// entry is one preprocessed image on its way to a model: the tag of its
// input in the model's batcher.
type entry struct {
	st  *jobState
	idx int
	col *vecstore.Collection // where its vector goes
}

// newBatcher is model mi's engine batcher: it flushes when a batch is full
// or Linger has passed since the batch's first image, across jobs.
func (w *Worker) newBatcher(mi int) *engine.Batcher[float32] {
	m := w.cfg.Models[mi]
	name := m.Spec().Name
	return engine.NewBatcher[float32](m, engine.BatchConfig{MaxBatch: w.cfg.BatchSize, Linger: w.cfg.Linger,
		ResultsBuffer: max(1, w.cfg.UpsertRows/w.cfg.BatchSize), // what one group commit can take
		Observe: func(n int, took time.Duration, err error) {
			if err == nil {
				w.cfg.Metrics.observe("embed", name, took.Seconds())
				w.cfg.Metrics.embedded(name, n, w.cfg.BatchSize, took.Seconds())
			}
		}})
}

// upsertLoop writes model mi's embedded batches to Milvus, in order, until
// the batcher closes; each entry's job learns the outcome. The batches
// that come out while a write is in flight go together in the next write
// (group commit, up to UpsertRows rows): when writes are fast each batch
// is one write, and when the store slows down (milvus-lite's cost per
// call grows with the collection) the writes grow instead of falling
// behind.
func (w *Worker) upsertLoop(ctx context.Context, mi int, b *engine.Batcher[float32]) {
	model := w.cfg.Models[mi].Spec().Name
	groupCommit(b.Results(), w.cfg.UpsertRows, func(group []engine.Result) { w.upsertGroup(ctx, model, group) })
}

// groupCommit calls write for each batch from queue, in order, with the
// batches that are already waiting appended to it, up to maxRows results
// (a batch is never split), until queue closes.
func groupCommit(queue <-chan []engine.Result, maxRows int, write func([]engine.Result)) {
	for first := range queue {
		group := first
	drain:
		for len(group) < maxRows {
			select {
			case next, ok := <-queue:
				if !ok {
					break drain
				}
				group = append(group, next...)
			default:
				break drain
			}
		}
		write(group)
	}
}

// groupWrite is one upsert of a group: the rows for one collection and the
// entries whose jobs learn its outcome.
type groupWrite struct {
	col  *vecstore.Collection
	rows []vecstore.Row
	at   map[string]int // row index by ID
	ents []entry
}

// planGroup splits a group of results into one write per collection (a
// group whose images go to several collections, sets, is several); an
// object that comes twice (a job redelivered while its first delivery is
// still here) is one row, with its latest vector. Failed embeddings finish
// their entries at once.
func planGroup(model string, group []engine.Result) []*groupWrite {
	var writes []*groupWrite
	byCol := map[*vecstore.Collection]*groupWrite{}
	for _, r := range group {
		e := r.Tag.(entry)
		if r.Err != nil {
			err := r.Err
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, engine.ErrClosed) {
				err = errTransient{err}
			} else {
				err = fmt.Errorf("embed %s: %w", model, err)
			}
			e.st.finish(1, err)
			continue
		}
		wr := byCol[e.col]
		if wr == nil {
			wr = &groupWrite{col: e.col, at: map[string]int{}}
			byCol[e.col] = wr
			writes = append(writes, wr)
		}
		it := e.st.items[e.idx]
		uri := e.st.src.ObjectURI(it.key)
		row := vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: it.etag, Size: it.size,
			Width: it.width, Height: it.height, Vector: r.Vec, SHA256: it.sha256}
		if k, dup := wr.at[row.ID]; dup {
			wr.rows[k] = row
		} else {
			wr.at[row.ID] = len(wr.rows)
			wr.rows = append(wr.rows, row)
		}
		wr.ents = append(wr.ents, e)
	}
	return writes
}

// upsertGroup writes one group of results, one upsert per collection
// (planGroup), and tells each entry's job the outcome.
func (w *Worker) upsertGroup(ctx context.Context, model string, group []engine.Result) {
	writes := planGroup(model, group)
	for _, wr := range writes {
		t0 := time.Now()
		err := wr.col.Upsert(ctx, wr.rows)
		w.cfg.Metrics.observe("upsert", model, time.Since(t0).Seconds())
		w.cfg.Metrics.upserted(len(wr.rows))
		switch {
		case err == nil:
		case errors.Is(err, vecstore.ErrNoCollection):
			// Dropped while this worker writes it (a version retired
			// before its workers stopped): the job goes back, and its next
			// attempt ensures the collection again.
			w.forgetCollection(wr.col)
			w.cfg.Log.Warn("collection gone: handing its jobs back; the next attempt makes it again", "collection", wr.col.Name, "err", err)
			err = errTransient{err}
		case errors.Is(err, vecstore.ErrUnavailable), errors.Is(err, vecstore.ErrServer):
			// An outage, or a server that answers with errors while it
			// comes back: the job is tried again later (MaxDeliver bounds
			// how often), never dead-lettered at the first one.
			err = errTransient{err}
		}
		for _, e := range wr.ents {
			e.st.finish(1, err)
		}
	}
}
