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

// process embeds a job's items into every model's collection. It returns
// errTransient for trouble worth retrying; permanent per-item failures are
// in the result.
func (w *Worker) process(ctx context.Context, job jobs.Job) (jobs.Result, []string, error) {
	res := jobs.Result{Schema: jobs.Schema, Run: job.Run, Seq: job.Seq, Worker: w.cfg.Name}
	var kinds []string
	models := w.cfg.Models
	for _, name := range job.Models {
		if _, ok := w.cols[name]; !ok {
			return res, nil, fmt.Errorf("worker %s does not serve model %s (it has %v)", w.cfg.Name, name, w.modelNames())
		}
	}
	src, err := w.source(job.Source)
	if err != nil {
		return res, nil, fmt.Errorf("open source %s: %w", job.Source, err)
	}
	n := len(job.Items)
	items := make([]item, n)
	tensors := make([][]float32, len(models))
	for mi, m := range models {
		tensors[mi] = make([]float32, n*m.InputSize())
	}

	// Fetch and decode concurrently; each item's pixels go straight into
	// slot i of every model's tensor.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, w.cfg.FetchConcurrency)
	)
	prepStart := time.Now()
	for i, it := range job.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			items[i] = item{key: it.Key, etag: it.ETag, size: it.Size}
			err := w.prepare(ctx, src, &items[i], i, tensors)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	w.cfg.Metrics.observe("prepare", "", time.Since(prepStart).Seconds())
	if firstErr != nil {
		return res, nil, firstErr
	}

	// Compact the good items to the front of each tensor.
	good := make([]int, 0, n)
	for i := range items {
		if items[i].failure == "" {
			good = append(good, i)
		} else {
			res.Failed = append(res.Failed, jobs.Failure{Key: items[i].key, Reason: items[i].failure})
			kinds = append(kinds, items[i].kind)
		}
	}
	for mi, m := range models {
		sz := m.InputSize()
		t := tensors[mi]
		for j, i := range good {
			if i != j {
				copy(t[j*sz:(j+1)*sz], t[i*sz:(i+1)*sz])
			}
		}
		if err := w.embedAndStore(ctx, mi, t[:len(good)*sz], good, items, src); err != nil {
			return res, nil, err
		}
	}
	res.Stored = len(good)
	return res, kinds, nil
}

// prepare fetches, decodes and preprocesses one item. A permanent problem
// with the item is recorded in it; a transient one is returned.
func (w *Worker) prepare(ctx context.Context, src objstore.Source, it *item, slot int, tensors [][]float32) error {
	maxBytes := w.cfg.Limits.MaxBytes
	if maxBytes <= 0 {
		maxBytes = imageprep.DefaultMaxBytes
	}
	data, err := src.Get(ctx, it.key, maxBytes)
	switch {
	case err == nil:
	case errors.Is(err, objstore.ErrTransient), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errTransient{err}
	default: // not found, too large, access denied
		it.failure, it.kind = err.Error(), reasonOf(err)
		return nil
	}
	t := <-w.tools
	defer func() { w.tools <- t }()
	img, _, err := t.dec.Decode(data)
	if err != nil {
		it.failure, it.kind = err.Error(), reasonOf(err)
		return nil
	}
	it.width, it.height = img.Width, img.Height
	for mi, m := range w.cfg.Models {
		sz := m.InputSize()
		if err := t.pps[mi].Run(img, tensors[mi][slot*sz:(slot+1)*sz]); err != nil {
			it.failure, it.kind = err.Error(), reasonOf(err)
			return nil
		}
	}
	return nil
}

func (w *Worker) embedAndStore(ctx context.Context, mi int, pixels []float32, good []int, items []item, src objstore.Source) error {
	m := w.cfg.Models[mi]
	spec := m.Spec()
	col := w.cols[spec.Name]
	sz, dim, bs := m.InputSize(), spec.Dim, w.cfg.BatchSize
	out := make([]float32, bs*dim)
	for lo := 0; lo < len(good); lo += bs {
		hi := min(lo+bs, len(good))
		k := hi - lo
		t0 := time.Now()
		if err := m.Embed(pixels[lo*sz:hi*sz], k, out[:k*dim]); err != nil {
			return fmt.Errorf("embed %s: %w", spec.Name, err)
		}
		w.cfg.Metrics.observe("embed", spec.Name, time.Since(t0).Seconds())
		w.cfg.Metrics.embedded(spec.Name, k, bs)
		rows := make([]vecstore.Row, k)
		for j := 0; j < k; j++ {
			it := items[good[lo+j]]
			vec := make([]float32, dim)
			copy(vec, out[j*dim:(j+1)*dim])
			rows[j] = vecstore.Row{ID: vecstore.ID(src.ObjectURI(it.key)), URI: src.ObjectURI(it.key), ETag: it.etag,
				Size: it.size, Width: it.width, Height: it.height, Vector: vec}
		}
		t0 = time.Now()
		err := col.Upsert(ctx, rows)
		w.cfg.Metrics.observe("upsert", spec.Name, time.Since(t0).Seconds())
		if err != nil {
			if errors.Is(err, vecstore.ErrUnavailable) {
				return errTransient{err}
			}
			return err
		}
	}
	return nil
}
