package coordinator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/manifest"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// VectorStore is what an incremental run needs of Milvus: removing the rows
// of deleted objects (from every version's collection).
type VectorStore interface {
	DeleteObjects(ctx context.Context, model string, uris []string) error
}

// IncrementalConfig adds to Config what an incremental run needs.
type IncrementalConfig struct {
	Config
	// Config.Versions are the current model versions: each version has
	// manifests of its own; a version without one (an upgrade) is embedded
	// in full, into that version's own collection, while the active one
	// goes on answering queries (see vecstore.Activate). A model missing
	// there is assumed unchanged.
	Store  VectorStore // required unless DryRun
	DryRun bool        // count the diff, change nothing
}

// Incremental is an enumerated incremental run, to be finished with Finish
// once its jobs are done.
type Incremental struct {
	Run   jobs.Run
	cfg   IncrementalConfig
	spool *os.File // the full listing, as a manifest
	lease *lease
}

// Close releases the run's lease and temporary files. It may be called
// more than once.
func (inc *Incremental) Close() {
	if inc.spool != nil {
		inc.spool.Close()
		os.Remove(inc.spool.Name())
		inc.spool = nil
	}
	if inc.lease != nil {
		inc.lease.release()
		inc.lease = nil
	}
}

func manifestName(srcKey, model, run string) string {
	return srcKey + "/" + model + "/" + run + ".manifest"
}

// manifestPointer is the KV key of a model's (or a model@set target's)
// latest manifest of a source, of whichever version; KV keys take no '@',
// so a set follows an '='. Each version's own latest is under
// versionPointer's key.
func manifestPointer(srcKey, model string) string {
	return "manifest_" + srcKey + "_" + strings.ReplaceAll(model, "@", "=")
}

// versionPointer is the KV key of the manifest of one version of a model
// (manifestPointer's when the version is unknown).
func versionPointer(srcKey, model, version string) string {
	if version == "" {
		return manifestPointer(srcKey, model)
	}
	return manifestPointer(srcKey, model) + "_v" + vecstore.VersionTag(version)
}

type pointer struct {
	Object  string    `json:"object"`
	Run     string    `json:"run"`
	Version string    `json:"version"`
	Count   int64     `json:"count"`
	Written time.Time `json:"written"`
}

// RunIncremental diffs the source's listing against the last manifest of
// each model: new and changed objects become jobs (for the models that need
// them), objects gone from the source are deleted from every collection,
// unchanged ones are skipped. With DryRun it only counts. The lease is held
// until Close.
func RunIncremental(ctx context.Context, cfg IncrementalConfig) (*Incremental, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Store == nil && !cfg.DryRun {
		return nil, errors.New("coordinator: an incremental run needs a vector store to delete from")
	}
	t := cfg.Topology
	srcKey := SourceKey(cfg.Source.URI())
	inc := &Incremental{cfg: cfg}
	if !cfg.DryRun {
		leases, err := cfg.JS.KeyValue(ctx, t.LeasesBucket())
		if err != nil {
			return nil, fmt.Errorf("coordinator: leases bucket: %w", err)
		}
		if inc.lease, err = acquire(ctx, leases, srcKey, cfg.Owner); err != nil {
			return nil, err
		}
		go inc.lease.keep(ctx, cfg.Log)
	}
	ok := false
	defer func() {
		if !ok {
			inc.Close()
		}
	}()
	runs, err := cfg.JS.KeyValue(ctx, t.RunsBucket())
	if err != nil {
		return nil, err
	}
	store, err := cfg.JS.ObjectStore(ctx, t.ManifestsBucket())
	if err != nil {
		return nil, fmt.Errorf("coordinator: manifests: %w", err)
	}
	rec := newRunRecord(cfg.Config)
	rec.Incremental, rec.Diff = true, map[string]jobs.DiffCounts{}

	// One cursor per model over its last manifest.
	cursors := make([]*manifest.Cursor, len(cfg.Models))
	for i, m := range cfg.Models {
		counts := jobs.DiffCounts{}
		r, closer, err := openManifest(ctx, runs, store, srcKey, m, cfg.Versions[m])
		if err != nil {
			return nil, err
		}
		if closer != nil {
			defer closer.Close()
		}
		if r != nil {
			if v := cfg.Versions[m]; v != "" && r.Header.Version != "" && v != r.Header.Version {
				cfg.Log.Warn("new model version: embedding everything into its own collection; the active version answers queries until `embedfleet models activate`",
					"model", m, "was", r.Header.Version, "now", v)
				counts.Upgraded = true
				r = nil
			}
		}
		rec.Diff[m] = counts
		cursors[i] = manifest.NewCursor(r)
	}
	spool, err := os.CreateTemp("", "embedfleet-listing-*.manifest")
	if err != nil {
		return nil, err
	}
	inc.spool = spool
	sw, err := manifest.NewWriter(spool, manifest.Header{Source: cfg.Source.URI(), Run: rec.ID})
	if err != nil {
		return nil, err
	}

	p := &publisher{cfg: cfg.Config, rec: rec, jobSize: cfg.JobSize}
	if !cfg.DryRun {
		p.runs = runs
	}
	deletes := make([][]string, len(cfg.Models))
	flushDeletes := func(i int, force bool) error {
		if len(deletes[i]) == 0 || (!force && len(deletes[i]) < 1000) {
			return nil
		}
		if !cfg.DryRun {
			if err := cfg.Store.DeleteObjects(ctx, cfg.Models[i], deletes[i]); err != nil {
				return fmt.Errorf("coordinator: delete from %s: %w", cfg.Models[i], err)
			}
		}
		deletes[i] = deletes[i][:0]
		return nil
	}
	gone := func(i int) func(manifest.Entry) error {
		return func(e manifest.Entry) error {
			c := rec.Diff[cfg.Models[i]]
			c.Deleted++
			rec.Diff[cfg.Models[i]] = c
			deletes[i] = append(deletes[i], cfg.Source.ObjectURI(e.Key))
			return flushDeletes(i, false)
		}
	}
	// Items are grouped by the set of models that need them.
	groups := map[string]*group{}
	var order []string
	seq, listed := int64(0), int64(0)
	publish := func(g *group) error {
		if len(g.items) == 0 {
			return nil
		}
		seq++
		listed += int64(len(g.items))
		if !cfg.DryRun {
			job := jobs.Job{Schema: jobs.Schema, Run: rec.ID, Seq: seq, Source: rec.Source, Models: g.models, Versions: rec.Versions, Items: g.items}
			data, _ := json.Marshal(job)
			if err := cfg.Journal.add(seq, data); err != nil {
				return err
			}
			f, err := cfg.JS.PublishAsync(t.RunJobSubject(rec), data, jetstream.WithMsgID(job.MsgID()))
			if err != nil {
				return fmt.Errorf("coordinator: publish job %d: %w", seq, err)
			}
			p.pending = append(p.pending, f)
			if len(p.pending) >= cfg.MaxInFlight {
				if err := p.flushPending(ctx); err != nil {
					return err
				}
			}
		}
		g.items = make([]jobs.Item, 0, cfg.JobSize)
		return nil
	}
	err = cfg.Source.List(ctx, "", func(o objstore.Object) error {
		e := manifest.Entry{Key: o.Key, ETag: o.ETag, Size: o.Size}
		if err := sw.Write(e); err != nil {
			return err
		}
		var need []string
		for i, m := range cfg.Models {
			prev, found, err := cursors[i].Seek(o.Key, gone(i))
			if err != nil {
				return err
			}
			c := rec.Diff[m]
			switch {
			case !found:
				c.New++
				need = append(need, m)
			case !prev.Same(e):
				c.Changed++
				need = append(need, m)
			default:
				c.Unchanged++
			}
			rec.Diff[m] = c
		}
		if len(need) == 0 {
			return nil
		}
		k := strings.Join(need, ",")
		g, ok := groups[k]
		if !ok {
			g = &group{models: need, items: make([]jobs.Item, 0, cfg.JobSize)}
			groups[k] = g
			order = append(order, k)
		}
		g.items = append(g.items, jobs.Item{Key: o.Key, ETag: o.ETag, Size: o.Size})
		if len(g.items) == cfg.JobSize {
			return publish(g)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range cursors {
		if err := cursors[i].Rest(gone(i)); err != nil {
			return nil, err
		}
		if err := flushDeletes(i, true); err != nil {
			return nil, err
		}
	}
	sort.Strings(order)
	for _, k := range order {
		if err := publish(groups[k]); err != nil {
			return nil, err
		}
	}
	if err := sw.Close(); err != nil {
		return nil, err
	}
	if !cfg.DryRun {
		if err := p.flushPending(ctx); err != nil {
			return nil, err
		}
	}
	rec.Listed, rec.Jobs, rec.Enumerated = listed, seq, true
	inc.Run = rec
	if !cfg.DryRun {
		p.rec = rec
		if err := p.save(ctx); err != nil {
			return nil, err
		}
	}
	cfg.Log.Info("incremental run enumerated", "run", rec.ID, "to_embed", listed, "jobs", seq, "diff", rec.Diff)
	ok = true
	return inc, nil
}

type group struct {
	models []string
	items  []jobs.Item
}

// flushPending waits until the stream has acknowledged every job published
// so far.
func (p *publisher) flushPending(ctx context.Context) error {
	for _, f := range p.pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("coordinator: publish %s: %w", f.Msg().Header.Get("Nats-Msg-Id"), err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.pending = p.pending[:0]
	return nil
}

// openManifest opens the last manifest of model's version (or, if that
// version has none, the one from before versions had their own, whose
// header says which version made it).
func openManifest(ctx context.Context, runs jetstream.KeyValue, store jetstream.ObjectStore, srcKey, model, version string) (*manifest.Reader, interface{ Close() error }, error) {
	e, err := runs.Get(ctx, versionPointer(srcKey, model, version))
	if errors.Is(err, jetstream.ErrKeyNotFound) && version != "" {
		e, err = runs.Get(ctx, manifestPointer(srcKey, model))
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("coordinator: manifest pointer of %s: %w", model, err)
	}
	var ptr pointer
	if err := json.Unmarshal(e.Value(), &ptr); err != nil {
		return nil, nil, fmt.Errorf("coordinator: manifest pointer of %s: %w", model, err)
	}
	// The manifest is read as the listing is merged with it, which can
	// take hours; but an object-store read has the JetStream context's
	// default timeout (5 s) unless its context has a deadline. So it is
	// copied to a temporary file first, within a bound of its own, and
	// read from there.
	f, err := os.CreateTemp("", "embedfleet-manifest-*")
	if err != nil {
		return nil, nil, err
	}
	spool := &spooled{f}
	gctx, cancel := context.WithTimeout(ctx, manifestReadTimeout)
	defer cancel()
	obj, err := store.Get(gctx, ptr.Object)
	if err == nil {
		_, err = io.Copy(f, obj)
		obj.Close()
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		spool.Close()
		return nil, nil, fmt.Errorf("coordinator: manifest %s: %w", ptr.Object, err)
	}
	r, err := manifest.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		spool.Close()
		return nil, nil, fmt.Errorf("coordinator: manifest %s: %w", ptr.Object, err)
	}
	return r, spool, nil
}

// manifestReadTimeout bounds copying one manifest out of the object store
// (a million objects' manifest is some tens of MB).
const manifestReadTimeout = 10 * time.Minute

// spooled is a temporary file removed when closed.
type spooled struct{ *os.File }

func (s *spooled) Close() error {
	err := s.File.Close()
	os.Remove(s.Name())
	return err
}

// Finish writes each model's new manifest once the run is complete: the
// run's listing less the items that failed for a reason that may pass (so
// they are retried next time).
// An incomplete run writes nothing, so the last good manifest stays.
func (inc *Incremental) Finish(ctx context.Context, sum Summary) error {
	if !sum.Complete {
		return fmt.Errorf("coordinator: run %s is not complete; the last good manifest is kept", inc.Run.ID)
	}
	cfg := inc.cfg
	t := cfg.Topology
	srcKey := SourceKey(cfg.Source.URI())
	// Items that failed for a reason that may pass (gone, access denied,
	// lost) stay out of the manifest, so the next run tries them again.
	// Items whose bytes failed (corrupt, unsupported, too large) stay in:
	// the next run tries them only if their ETag has changed.
	failed := make(map[string]bool, len(sum.Failed))
	for _, f := range sum.Failed {
		if !jobs.Permanent(f.Kind) {
			failed[f.Key] = true
		}
	}
	runs, err := cfg.JS.KeyValue(ctx, t.RunsBucket())
	if err != nil {
		return err
	}
	store, err := cfg.JS.ObjectStore(ctx, t.ManifestsBucket())
	if err != nil {
		return err
	}
	for _, m := range cfg.Models {
		if _, err := inc.spool.Seek(0, 0); err != nil {
			return err
		}
		r, err := manifest.NewReader(inc.spool)
		if err != nil {
			return err
		}
		tmp, err := os.CreateTemp("", "embedfleet-manifest-*")
		if err != nil {
			return err
		}
		count, err := writeFiltered(tmp, r, manifest.Header{Source: cfg.Source.URI(), Model: m, Version: cfg.Versions[m], Run: inc.Run.ID}, failed)
		if err == nil {
			_, err = tmp.Seek(0, 0)
		}
		name := manifestName(srcKey, m, inc.Run.ID)
		if err == nil {
			// A deadline of its own: without one, the object store allows
			// the JetStream default (5 s) for the whole upload.
			pctx, cancel := context.WithTimeout(ctx, manifestReadTimeout)
			_, err = store.Put(pctx, jetstream.ObjectMeta{Name: name}, tmp)
			cancel()
		}
		tmp.Close()
		os.Remove(tmp.Name())
		if err != nil {
			return fmt.Errorf("coordinator: write manifest %s: %w", name, err)
		}
		// Switch the pointer only after the new manifest is stored, then
		// remove the one it replaces.
		key := versionPointer(srcKey, m, cfg.Versions[m])
		var old pointer
		if e, err := runs.Get(ctx, key); err == nil {
			_ = json.Unmarshal(e.Value(), &old)
		}
		b, _ := json.Marshal(pointer{Object: name, Run: inc.Run.ID, Version: cfg.Versions[m], Count: count, Written: time.Now().UTC()})
		if _, err := runs.Put(ctx, key, b); err != nil {
			return fmt.Errorf("coordinator: manifest pointer of %s: %w", m, err)
		}
		if old.Object != "" && old.Object != name {
			_ = store.Delete(ctx, old.Object)
		}
		// The model's own key points at the latest manifest of any
		// version: a run of another version finds it and knows it is an
		// upgrade. The manifest it pointed to is removed only if it was
		// this version's from before versions had keys of their own.
		if legacy := manifestPointer(srcKey, m); legacy != key {
			var lp pointer
			if e, err := runs.Get(ctx, legacy); err == nil {
				_ = json.Unmarshal(e.Value(), &lp)
			}
			if _, err := runs.Put(ctx, legacy, b); err != nil {
				return fmt.Errorf("coordinator: manifest pointer of %s: %w", m, err)
			}
			if lp.Object != "" && lp.Object != name && lp.Object != old.Object && lp.Version == cfg.Versions[m] {
				_ = store.Delete(ctx, lp.Object)
			}
		}
	}
	inc.Run.Finished = time.Now().UTC()
	inc.Run.Stored, inc.Run.Failed = sum.Stored, int64(len(sum.Failed))
	b, _ := json.Marshal(runState{Run: inc.Run, JobSize: cfg.JobSize})
	_, err = runs.Put(ctx, RunKey(inc.Run.ID), b)
	return err
}

func writeFiltered(f *os.File, r *manifest.Reader, h manifest.Header, skip map[string]bool) (int64, error) {
	w, err := manifest.NewWriter(f, h)
	if err != nil {
		return 0, err
	}
	for {
		e, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return 0, err
		}
		if skip[e.Key] {
			continue
		}
		if err := w.Write(e); err != nil {
			return 0, err
		}
	}
	return w.Count(), w.Close()
}

// ForgetVersion removes every manifest that version of target recorded,
// for every source: its own pointers, and a model's latest pointer when
// that version wrote it, with the manifests they point to. A version's
// collection is retired after this, so that an incremental run for that
// version (say, after it is built again) embeds everything instead of
// trusting a manifest of rows that are gone. target may be spelled any way
// that makes the same collection name (vecstore.SameTarget). It returns the
// number of pointers removed.
func ForgetVersion(ctx context.Context, js jetstream.JetStream, t bus.Topology, target, version string) (int, error) {
	runs, err := js.KeyValue(ctx, t.RunsBucket())
	if err != nil {
		return 0, fmt.Errorf("coordinator: runs bucket: %w", err)
	}
	store, err := js.ObjectStore(ctx, t.ManifestsBucket())
	if err != nil {
		return 0, fmt.Errorf("coordinator: manifests: %w", err)
	}
	keys, err := runs.ListKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("coordinator: runs bucket: %w", err)
	}
	// The model part of a pointer key is the last len(target) characters
	// before the version suffix (spellings of one model differ only in -
	// and _, so they are as long); a set's '@' is '=' in keys.
	ofTarget := func(rest string) bool {
		n := len(strings.ReplaceAll(target, "@", "="))
		if len(rest) <= n || rest[len(rest)-n-1] != '_' {
			return false
		}
		return vecstore.SameTarget(strings.ReplaceAll(rest[len(rest)-n:], "=", "@"), target)
	}
	suffix := "_v" + vecstore.VersionTag(version)
	var doomed []string
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "manifest_") {
			continue
		}
		if rest, ok := strings.CutSuffix(k, suffix); ok && ofTarget(rest) {
			doomed = append(doomed, k)
		} else if ofTarget(k) {
			// The model's latest pointer, whichever version wrote it.
			doomed = append(doomed, k)
		}
	}
	removed := 0
	for _, k := range doomed {
		e, err := runs.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("coordinator: manifest pointer %s: %w", k, err)
		}
		var p pointer
		_ = json.Unmarshal(e.Value(), &p)
		if !strings.HasSuffix(k, suffix) && p.Version != version {
			continue // another version's latest
		}
		if err := runs.Delete(ctx, k); err != nil {
			return removed, fmt.Errorf("coordinator: manifest pointer %s: %w", k, err)
		}
		removed++
		if p.Object != "" {
			if err := store.Delete(ctx, p.Object); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return removed, fmt.Errorf("coordinator: manifest %s: %w", p.Object, err)
			}
		}
	}
	return removed, nil
}
