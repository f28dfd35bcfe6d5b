// Package worker embeds the images of jobs pulled from NATS JetStream and
// upserts the vectors into Milvus, one collection per model.
//
// Jobs flow through stages: up to Prefetch jobs are in hand at once; their
// items are fetched from the source (FetchConcurrency at a time), decoded
// once and preprocessed for every model; each model has one batcher that
// fills batches across jobs, runs the model when a batch is full or Linger
// has passed since its first image, and upserts the rows. When every item of
// a job is stored in every model's collection (or failed for good), the
// job's result is published, then the job is acked. The ack comes last, so a
// worker that dies at any point leaves the job to be redelivered, and
// re-embedding it only rewrites the same rows (primary keys come from the
// object's identity).
//
// Errors are sorted: an item that can never be embedded (corrupt,
// unsupported, too large, gone) is recorded in the result and the job is
// still acked; trouble that may pass (S3 5xx, Milvus unavailable) naks the
// job with a growing delay; after MaxDeliver attempts the job goes to the
// dead-letter stream with its reason.
//
//	w, err := worker.New(ctx, worker.Config{...})
//	err = w.Run(ctx) // returns after ctx ends and the job in hand is finished or handed back
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// Config of a worker. JS, Consumer, Models, Store and OpenSource are required.
type Config struct {
	JS         jetstream.JetStream
	Topology   bus.Topology
	Consumer   jetstream.Consumer
	Models     []engine.ImageEncoder // *embed.Model
	Store      *vecstore.Store
	OpenSource func(uri string) (objstore.Source, error)

	BatchSize int           // images per inference call; default 32
	Linger    time.Duration // a partial batch waits at most this long for more images; default 50 ms
	Prefetch  int           // jobs in hand at once; default 2
	// UpsertRows bounds one Milvus write: the batches embedded while a
	// write is in flight go together in the next, up to this many rows;
	// default 1024.
	UpsertRows       int
	FetchConcurrency int // objects read at once; default 16
	// FetchBytes bounds the bytes of fetched objects held at once, waiting
	// to be decoded: each object holds its listed size (Limits.MaxBytes
	// when unknown) from before its read until its decode ends; one larger
	// than the budget goes alone. Default 256 MiB.
	FetchBytes   int64
	PrepWorkers  int // goroutines decoding; default GOMAXPROCS
	Limits       imageprep.Limits
	AckWait      time.Duration // the consumer's; InProgress is sent every third of it; default 2 min
	MaxDeliver   int           // the consumer's; default 10
	DrainTimeout time.Duration // after ctx ends, time to finish the job in hand; default 30 s
	Name         string        // default host-pid
	Log          *slog.Logger
	Metrics      *Metrics // nil: none

	// DecoderOptions: how images are decoded, e.g.
	// imageprep.WithoutEXIFOrientation(). Queries should decode the same way.
	DecoderOptions []imageprep.DecoderOption
	// FastDecode decodes JPEGs at a DCT scaling fitted to the largest of
	// the models' resize targets (engine.Draft); queries should decode the
	// same way.
	FastDecode bool
}

// Worker pulls and processes jobs. Build it with New.
type Worker struct {
	cfg      Config
	colMu    sync.Mutex
	cols     map[string]*vecstore.Collection // by target (see vecstore.Target)
	sources  sync.Map                        // uri -> objstore.Source
	prep     *engine.Preparer                // decodes once, preprocesses for every model
	fetchSem chan struct{}
	bytesSem *semaphore.Weighted // FetchBytes
	failures jetstream.KeyValue  // the topology's FailuresBucket
}

// New checks the config, and creates or checks each model's collection:
// a collection that holds another version of a model fails here.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	if cfg.JS == nil || cfg.Consumer == nil || cfg.Store == nil || cfg.OpenSource == nil || len(cfg.Models) == 0 {
		return nil, errors.New("worker: JS, Consumer, Store, OpenSource and at least one model are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 32
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 50 * time.Millisecond
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 2
	}
	if cfg.UpsertRows <= 0 {
		cfg.UpsertRows = 1024
	}
	if cfg.FetchConcurrency <= 0 {
		cfg.FetchConcurrency = 16
	}
	if cfg.FetchBytes <= 0 {
		cfg.FetchBytes = 256 << 20
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.PrepWorkers <= 0 {
		cfg.PrepWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 2 * time.Minute
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 10
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &Worker{cfg: cfg, cols: map[string]*vecstore.Collection{},
		fetchSem: make(chan struct{}, cfg.FetchConcurrency), bytesSem: semaphore.NewWeighted(cfg.FetchBytes)}
	kv, err := cfg.JS.KeyValue(ctx, cfg.Topology.FailuresBucket())
	if err != nil {
		return nil, fmt.Errorf("worker: failures bucket %s (run the topology's Ensure first): %w", cfg.Topology.FailuresBucket(), err)
	}
	w.failures = kv
	for _, m := range cfg.Models {
		col, err := cfg.Store.Ensure(ctx, m.Spec())
		if err != nil {
			return nil, fmt.Errorf("worker: model %s: %w", m.Spec().Name, err)
		}
		w.cols[m.Spec().Name] = col
	}
	params := make([]imageprep.Params, len(cfg.Models))
	for i, m := range cfg.Models {
		params[i] = m.Params()
	}
	decOpts := cfg.DecoderOptions
	if cfg.FastDecode {
		decOpts = append(append([]imageprep.DecoderOption(nil), decOpts...), engine.Draft(params...))
	}
	w.prep, err = engine.NewPreparer(cfg.PrepWorkers, cfg.Limits, decOpts, params...)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Run pulls jobs until ctx ends. The jobs in hand when ctx ends are finished
// within DrainTimeout, or nak'd for immediate redelivery elsewhere.
func (w *Worker) Run(ctx context.Context) error {
	w.cfg.Log.Info("worker started", "name", w.cfg.Name, "models", w.modelNames())
	// Batchers and upserters outlive ctx: they serve the jobs being
	// drained. Once every job is done or handed back, the batchers close:
	// what they still hold belongs to jobs that gave up, whose contexts are
	// cancelled, so it is answered without running the model.
	bctx, stopUpserts := context.WithCancel(context.WithoutCancel(ctx))
	var bwg sync.WaitGroup
	batchers := make([]*engine.Batcher[float32], len(w.cfg.Models))
	for mi := range w.cfg.Models {
		batchers[mi] = w.newBatcher(mi)
		bwg.Add(1)
		go func() { defer bwg.Done(); w.upsertLoop(bctx, mi, batchers[mi]) }()
	}
	var jwg sync.WaitGroup
	slots := make(chan struct{}, w.cfg.Prefetch)
	defer func() {
		jwg.Wait()
		stopUpserts()
		for _, b := range batchers {
			b.Close()
		}
		bwg.Wait()
		w.cfg.Log.Info("worker stopped", "name", w.cfg.Name)
	}()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			w.cfg.Log.Info("worker stopping", "name", w.cfg.Name)
			return nil
		}
		batch, err := w.cfg.Consumer.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				w.cfg.Log.Info("worker stopping", "name", w.cfg.Name)
				return nil
			}
			w.cfg.Log.Warn("fetch", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		got := false
		for msg := range batch.Messages() {
			got = true
			jwg.Add(1)
			go func() {
				defer jwg.Done()
				defer func() { <-slots }()
				w.handle(ctx, msg, batchers)
			}()
		}
		if !got {
			<-slots
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// collection is the collection of model mi's set (the model's own for
// ""), created on first use: a worker serves every set of its models.
func (w *Worker) collection(ctx context.Context, mi int, set string) (*vecstore.Collection, error) {
	spec := w.cfg.Models[mi].Spec()
	target := vecstore.Target(spec.Name, set)
	w.colMu.Lock()
	defer w.colMu.Unlock()
	if c, ok := w.cols[target]; ok {
		return c, nil
	}
	if err := vecstore.ValidSet(set); set != "" && err != nil {
		return nil, err
	}
	spec.Name = target
	c, err := w.cfg.Store.Ensure(ctx, spec)
	if err != nil {
		if errors.Is(err, vecstore.ErrUnavailable) {
			err = errTransient{err}
		}
		return nil, fmt.Errorf("collection of %s: %w", target, err)
	}
	w.cols[target] = c
	return c, nil
}

// forgetCollection drops col from the cache, so that the next job that
// needs it ensures it again.
func (w *Worker) forgetCollection(col *vecstore.Collection) {
	w.colMu.Lock()
	defer w.colMu.Unlock()
	for t, c := range w.cols {
		if c == col {
			delete(w.cols, t)
		}
	}
}

func (w *Worker) modelNames() []string {
	var n []string
	for _, m := range w.cfg.Models {
		n = append(n, m.Spec().Name)
	}
	return n
}

// errTransient marks job-level trouble worth another attempt.
type errTransient struct{ err error }

func (e errTransient) Error() string { return e.err.Error() }
func (e errTransient) Unwrap() error { return e.err }

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, batchers []*engine.Batcher[float32]) {
	meta, _ := msg.Metadata()
	job, err := jobs.Decode[jobs.Job](msg.Data())
	if err != nil {
		w.cfg.Log.Error("unreadable job, terminating it", "err", err)
		_ = msg.TermWithReason(err.Error())
		w.cfg.Metrics.job("dead")
		return
	}
	log := w.cfg.Log.With("run", job.Run, "seq", job.Seq)
	// Work on a context that survives shutdown for DrainTimeout.
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(w.cfg.DrainTimeout, cancel)
		<-work.Done()
		t.Stop()
	})
	defer stopDrain()
	// Keep the job ours while we work.
	go func() {
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()

	start := time.Now()
	res, kinds, err := w.process(work, job, batchers)
	if err != nil {
		attempts := uint64(1)
		if meta != nil {
			attempts = meta.NumDelivered
		}
		if work.Err() != nil && ctx.Err() != nil {
			log.Warn("drain timeout: handing the job back", "err", err)
			_ = msg.Nak()
			w.cfg.Metrics.job("handed_back")
			return
		}
		var tr errTransient
		if errors.As(err, &tr) && attempts < uint64(w.cfg.MaxDeliver) {
			delay := min(time.Duration(1<<min(attempts, 6))*time.Second, time.Minute)
			log.Warn("transient failure, retrying later", "err", err, "attempt", attempts, "delay", delay)
			_ = msg.NakWithDelay(delay)
			w.cfg.Metrics.job("retried")
			return
		}
		log.Error("giving up on job", "err", err, "attempts", attempts)
		w.deadLetter(work, job, err)
		_ = msg.TermWithReason(err.Error())
		w.cfg.Metrics.job("dead")
		return
	}
	res.Millis = time.Since(start).Milliseconds()
	if meta != nil {
		res.Attempts = meta.NumDelivered
	}
	if err := w.recordFailures(work, job, res.Failed); err != nil {
		log.Warn("failures not recorded, retrying the job", "err", err)
		_ = msg.NakWithDelay(time.Second)
		w.cfg.Metrics.job("retried")
		return
	}
	if err := w.publishResult(work, res); err != nil {
		log.Warn("result not published, retrying the job", "err", err)
		_ = msg.NakWithDelay(time.Second)
		w.cfg.Metrics.job("retried")
		return
	}
	if err := msg.DoubleAck(work); err != nil {
		// The job will come back; redoing it rewrites the same rows.
		log.Warn("ack failed", "err", err)
		return
	}
	w.cfg.Metrics.job("acked")
	w.cfg.Metrics.result(res.Stored, kinds)
	log.Debug("job done", "stored", res.Stored, "failed", len(res.Failed), "ms", res.Millis)
}

// recordFailures keeps a record of each item whose bytes cannot be embedded
// (jobs.Permanent), before the job's result is published and the job acked,
// so that verify and the next incremental run know it failed at this ETag.
func (w *Worker) recordFailures(ctx context.Context, job jobs.Job, failed []jobs.Failure) error {
	src, err := w.source(job.Source)
	if err != nil {
		return err
	}
	etags := make(map[string]string, len(job.Items))
	for _, it := range job.Items {
		etags[it.Key] = it.ETag
	}
	for _, f := range failed {
		if !jobs.Permanent(f.Kind) {
			continue
		}
		uri := src.ObjectURI(f.Key)
		data, _ := jsonMarshal(jobs.FailureRecord{Schema: jobs.Schema, URI: uri, ETag: etags[f.Key], Kind: f.Kind, Reason: f.Reason, At: time.Now().UTC()})
		if _, err := w.failures.Put(ctx, vecstore.ID(uri), data); err != nil {
			return fmt.Errorf("record the failure of %s: %w", uri, err)
		}
	}
	return nil
}

func (w *Worker) publishResult(ctx context.Context, res jobs.Result) error {
	data, _ := jsonMarshal(res)
	_, err := w.cfg.JS.Publish(ctx, w.cfg.Topology.ResultSubject(res.Run), data,
		jetstream.WithMsgID(fmt.Sprintf("%s.%d.r%d", res.Run, res.Seq, res.Attempts)))
	return err
}

func (w *Worker) deadLetter(ctx context.Context, job jobs.Job, reason error) {
	data, _ := jsonMarshal(jobs.Dead{Schema: jobs.Schema, Job: job, Reason: reason.Error(), At: time.Now().UTC()})
	if _, err := w.cfg.JS.Publish(ctx, w.cfg.Topology.DeadSubject(job.Run), data); err != nil {
		w.cfg.Log.Error("dead letter not published", "err", err)
	}
}
