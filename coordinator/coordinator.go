// Package coordinator turns a listing of a source into jobs on NATS
// JetStream and follows them to completion.
//
// One run: take the source's lease (two runs of one source never overlap),
// list the source in key order, cut the keys into jobs of JobSize items,
// publish them asynchronously with a bounded number in flight, and save a
// checkpoint (the last key whose job is acknowledged by the stream) as it
// goes. A run that crashes is resumed by the next one: it lists after the
// checkpoint and re-forms the same jobs with the same message ids, so the
// stream's deduplication drops any job published twice.
//
//	c := coordinator.New(js, topo)
//	rec, err := c.Run(ctx, coordinator.Config{Source: src, Models: []string{"clip-vit-b32"}})
//	sum, err := c.Wait(ctx, rec, progress)
package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
)

// Coordinator is one deployment's JetStream context and topology: every
// operation on runs (start, follow, inspect, verify) goes through one.
type Coordinator struct {
	JS       jetstream.JetStream
	Topology bus.Topology
}

// New returns the Coordinator of js and t.
func New(js jetstream.JetStream, t bus.Topology) *Coordinator {
	return &Coordinator{JS: js, Topology: t}
}

// Run is the package's Run with the Coordinator's JetStream and topology.
func (c *Coordinator) Run(ctx context.Context, cfg Config) (jobs.Run, error) {
	cfg.JS, cfg.Topology = c.JS, c.Topology
	return Run(ctx, cfg)
}

// Config of one run. JS, Source and Models are required (a Coordinator's
// Run fills in JS and Topology).
type Config struct {
	JS       jetstream.JetStream
	Topology bus.Topology
	Source   objstore.Source
	Models   []string
	// Versions are the model versions the run embeds with (sha256 of the
	// ONNX files), by model or target: each job carries them, and a worker
	// holding another version of a model hands such a job back instead of
	// writing its vectors. Incremental runs also key their manifests by
	// them. A model missing here is embedded by whatever version a worker
	// has.
	Versions map[string]string
	// Pool is the worker pool that takes the run's jobs ("" for the
	// default one): workers started with --pool NAME consume only jobs of
	// runs with that pool, so two fleets (say, of two model versions) can
	// share one NATS.
	Pool string

	JobSize     int           // items per job; default 64
	MaxInFlight int           // publishes awaiting the stream's ack; default 256
	Checkpoint  time.Duration // how often the run record is saved; default 2 s
	Owner       string        // who holds the lease; default host-pid
	Log         *slog.Logger
	Journal     *Journal // if set, every published job is kept for Wait to republish
}

func (c *Config) validate() error {
	if c.JS == nil || c.Source == nil {
		return errors.New("coordinator: JS and Source are required")
	}
	if len(c.Models) == 0 {
		return errors.New("coordinator: at least one model is required")
	}
	if err := bus.ValidPool(c.Pool); err != nil {
		return err
	}
	if c.JobSize <= 0 {
		c.JobSize = 64
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.Checkpoint <= 0 {
		c.Checkpoint = 2 * time.Second
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// SourceKey is the KV key of a source: a hash of its URI.
func SourceKey(uri string) string {
	h := sha256.Sum256([]byte(uri))
	return "source_" + hex.EncodeToString(h[:12])
}

// RunKey is the KV key of a run record.
func RunKey(id string) string { return "run_" + id }

// Run enumerates the source and publishes its jobs, resuming an
// interrupted run of the same source and models. It returns the run record
// with Enumerated set. ErrLeaseHeld (wrapped) means another run of this
// source is going on.
func Run(ctx context.Context, cfg Config) (jobs.Run, error) {
	if err := cfg.validate(); err != nil {
		return jobs.Run{}, err
	}
	t := cfg.Topology
	runs, err := cfg.JS.KeyValue(ctx, t.RunsBucket())
	if err != nil {
		return jobs.Run{}, fmt.Errorf("coordinator: runs bucket: %w", err)
	}
	leases, err := cfg.JS.KeyValue(ctx, t.LeasesBucket())
	if err != nil {
		return jobs.Run{}, fmt.Errorf("coordinator: leases bucket: %w", err)
	}
	srcKey := SourceKey(cfg.Source.URI())
	lease, err := acquire(ctx, leases, srcKey, cfg.Owner)
	if err != nil {
		return jobs.Run{}, err
	}
	defer lease.release()
	go lease.keep(ctx, cfg.Log)

	rec, jobSize, resumed, err := startOrResume(ctx, runs, srcKey, cfg)
	if err != nil {
		return rec, err
	}
	if resumed {
		cfg.Log.Info("resuming run", "run", rec.ID, "after", rec.LastKey, "jobs", rec.Jobs)
	} else {
		cfg.Log.Info("starting run", "run", rec.ID, "source", rec.Source, "models", rec.Models)
	}
	p := &publisher{cfg: cfg, runs: runs, rec: rec, jobSize: jobSize, lease: lease}
	if err := p.enumerate(ctx); err != nil {
		return p.rec, err
	}
	return p.rec, nil
}

type runState struct {
	jobs.Run
	JobSize int `json:"job_size"`
}

func startOrResume(ctx context.Context, runs jetstream.KeyValue, srcKey string, cfg Config) (jobs.Run, int, bool, error) {
	if e, err := runs.Get(ctx, srcKey); err == nil {
		var prev runState
		if json.Unmarshal(e.Value(), &prev) == nil && !prev.Enumerated && slices.Equal(prev.Models, cfg.Models) && prev.JobSize > 0 &&
			prev.Pool == cfg.Pool && maps.Equal(prev.Versions, cfg.versions()) {
			return prev.Run, prev.JobSize, true, nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return jobs.Run{}, 0, false, fmt.Errorf("coordinator: read checkpoint: %w", err)
	}
	return newRunRecord(cfg), cfg.JobSize, false, nil
}

func newRunRecord(cfg Config) jobs.Run {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return jobs.Run{
		Schema: jobs.Schema, ID: time.Now().UTC().Format("20060102t150405") + "-" + hex.EncodeToString(b[:]),
		Source: cfg.Source.URI(), Models: cfg.Models, Started: time.Now().UTC(),
		Pool: cfg.Pool, Versions: cfg.versions(),
	}
}

// versions is Versions less empty values and models not in the run, nil
// when nothing is left.
func (c Config) versions() map[string]string {
	var out map[string]string
	for _, m := range c.Models {
		if v := c.Versions[m]; v != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[m] = v
		}
	}
	return out
}

type publisher struct {
	cfg     Config
	runs    jetstream.KeyValue
	rec     jobs.Run
	jobSize int
	lease   *lease
	pending []jetstream.PubAckFuture
}

func (p *publisher) save(ctx context.Context) error {
	b, _ := json.Marshal(runState{Run: p.rec, JobSize: p.jobSize})
	if _, err := p.runs.Put(ctx, SourceKey(p.rec.Source), b); err != nil {
		return fmt.Errorf("coordinator: save checkpoint: %w", err)
	}
	if _, err := p.runs.Put(ctx, RunKey(p.rec.ID), b); err != nil {
		return fmt.Errorf("coordinator: save run record: %w", err)
	}
	return nil
}

// flush waits until every job published so far is acknowledged by the
// stream, then checkpoints up to lastKey.
func (p *publisher) flush(ctx context.Context, lastKey string, jobsDone, listed int64) error {
	if err := p.flushPending(ctx); err != nil {
		return err
	}
	p.rec.LastKey, p.rec.Jobs, p.rec.Listed = lastKey, jobsDone, listed
	return p.save(ctx)
}

func (p *publisher) enumerate(ctx context.Context) error {
	t := p.cfg.Topology
	seq, listed := p.rec.Jobs, p.rec.Listed
	batch := make([]jobs.Item, 0, p.jobSize)
	lastSave := time.Now()
	var lastKey string
	publish := func() error {
		if len(batch) == 0 {
			return nil
		}
		seq++
		job := jobs.Job{Schema: jobs.Schema, Run: p.rec.ID, Seq: seq, Source: p.rec.Source, Models: p.rec.Models, Versions: p.rec.Versions, Items: batch}
		data, _ := json.Marshal(job)
		if err := p.cfg.Journal.add(seq, data); err != nil {
			return err
		}
		f, err := p.cfg.JS.PublishAsync(t.RunJobSubject(p.rec), data, jetstream.WithMsgID(job.MsgID()))
		if err != nil {
			return fmt.Errorf("coordinator: publish job %d: %w", seq, err)
		}
		p.pending = append(p.pending, f)
		listed += int64(len(batch))
		batch = make([]jobs.Item, 0, p.jobSize)
		if len(p.pending) >= p.cfg.MaxInFlight || time.Since(lastSave) > p.cfg.Checkpoint {
			lastSave = time.Now()
			if err := p.flush(ctx, lastKey, seq, listed); err != nil {
				return err
			}
			p.cfg.Log.Debug("checkpoint", "run", p.rec.ID, "jobs", seq, "listed", listed, "last_key", lastKey)
		}
		return nil
	}
	err := p.cfg.Source.List(ctx, p.rec.LastKey, func(o objstore.Object) error {
		if p.lease.lost() {
			return errors.New("coordinator: lost the lease (another run took over); stopping")
		}
		batch = append(batch, jobs.Item{Key: o.Key, ETag: o.ETag, Size: o.Size})
		lastKey = o.Key
		if len(batch) == p.jobSize {
			return publish()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := publish(); err != nil {
		return err
	}
	if lastKey == "" {
		lastKey = p.rec.LastKey
	}
	p.rec.Enumerated = true
	if err := p.flush(ctx, lastKey, seq, listed); err != nil {
		p.rec.Enumerated = false
		return err
	}
	p.cfg.Log.Info("enumerated", "run", p.rec.ID, "listed", listed, "jobs", seq)
	return nil
}
