package coordinator

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// VerifyConfig says what to check: that every object listed in Source has a
// row with its current ETag in each model's collection, written by the
// model's current version, and that no rows remain for objects gone from the
// source.
type VerifyConfig struct {
	Source objstore.Source
	Models []string
	Store  *vecstore.Store
	// Versions are the expected model versions: a model given here is
	// checked in the collection of that version (active or not: an
	// upgrade is verified before it is activated); a model missing here is
	// checked in its active collection, against that one's version.
	Versions map[string]string
	// Failures is the topology's failures bucket: an object without a row
	// whose bytes failed for good at its current ETag is counted as failed,
	// not missing. Nil: every object without a row is missing.
	Failures jetstream.KeyValue
	// RetryFailed puts recorded failures back among the objects to embed.
	RetryFailed bool
}

// ModelReport is what Verify found for one model.
type ModelReport struct {
	Model string `json:"model"`
	// Collection is the one checked: the version's asked for, or the
	// active one.
	Collection string `json:"collection"`
	Listed     int64  `json:"listed"`
	OK         int64  `json:"ok"`
	Missing    int64  `json:"missing"` // listed, no row
	Stale      int64  `json:"stale"`   // a row with another ETag or model version
	Extra      int64  `json:"extra"`   // a row for an object that no longer exists
	Failed     int64  `json:"failed"`  // listed, no row, its bytes failed for good at this ETag
	// Duplicated counts objects stored more than once under their id
	// (see vecstore.Collection.Duplicated): one row answers queries, but
	// count(*) and the collection's size hold the copies.
	Duplicated int64 `json:"duplicated"`
	// Unscanned counts rows of listed objects that a lookup by id found
	// but the iterator over the prefix did not return: the scan that finds
	// extra rows did not see everything (a server's iterator can stop
	// short), so extra rows may be missed. Verify says so; run it again.
	Unscanned int64    `json:"unscanned,omitempty"`
	Samples   []string `json:"samples,omitempty"`
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Models []ModelReport `json:"models"`
	// Unlisted counts rows, per model, whose object exists but is not
	// listed (the source's filter leaves it out): kept, never deleted.
	Unlisted map[string]int64 `json:"unlisted,omitempty"`
	// ToEmbed are the objects missing or stale in at least one model, in key
	// order; ExtraURIs the rows to delete, per model.
	ToEmbed   []objstore.Object   `json:"-"`
	ExtraURIs map[string][]string `json:"-"`
	// DuplicateIDs are the ids stored more than once, per model: a repair
	// writes each back once.
	DuplicateIDs map[string][]string `json:"-"`
}

// Clean reports whether nothing is missing, stale, extra or duplicated. Recorded
// failures do not make a report unclean: they are what the source holds.
func (r VerifyReport) Clean() bool {
	for _, m := range r.Models {
		if m.Missing+m.Stale+m.Extra+m.Duplicated+m.Unscanned > 0 {
			return false
		}
	}
	return true
}

// loadFailures reads every failure record of the bucket (one small value per
// failed object).
func loadFailures(ctx context.Context, kv jetstream.KeyValue) (map[string]jobs.FailureRecord, error) {
	out := map[string]jobs.FailureRecord{}
	if kv == nil {
		return out, nil
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("verify: read failure records: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return out, nil
			}
			if e == nil { // every current value has been delivered
				return out, nil
			}
			rec, err := jobs.Decode[jobs.FailureRecord](e.Value())
			if err != nil {
				continue // a record this build cannot read counts as none
			}
			out[e.Key()] = rec
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Verify checks a source against Milvus. Memory grows with the number of
// listed objects (one id each), of recorded failures and of objects to
// repair.
func Verify(ctx context.Context, cfg VerifyConfig) (VerifyReport, error) {
	rep := VerifyReport{ExtraURIs: map[string][]string{}, Unlisted: map[string]int64{}, DuplicateIDs: map[string][]string{}}
	if len(cfg.Models) > maxVerifyModels {
		return rep, fmt.Errorf("verify: %d models at once; at most %d", len(cfg.Models), maxVerifyModels)
	}
	cols := make([]*vecstore.Collection, len(cfg.Models))
	for i, m := range cfg.Models {
		col, err := cfg.open(ctx, m)
		if err != nil {
			return rep, err
		}
		cols[i] = col
		rep.Models = append(rep.Models, ModelReport{Model: m, Collection: col.Name})
	}
	failures, err := loadFailures(ctx, cfg.Failures)
	if err != nil {
		return rep, err
	}
	want := func(i int) string {
		if v := cfg.Versions[cfg.Models[i]]; v != "" {
			return v
		}
		return cols[i].Version
	}
	// listed has a bit per model, set where the object has a row.
	listed := map[string]uint64{}
	withRow := make([]int64, len(cols)) // listed objects that have a row, per model
	var batch []objstore.Object
	check := func() error {
		if len(batch) == 0 {
			return nil
		}
		ids := make([]string, len(batch))
		for j, o := range batch {
			ids[j] = vecstore.ID(cfg.Source.ObjectURI(o.Key))
		}
		bad := make([]bool, len(batch))
		for i, col := range cols {
			found, err := col.Lookup(ctx, ids)
			if err != nil {
				return err
			}
			r := &rep.Models[i]
			for j, o := range batch {
				r.Listed++
				meta, ok := found[ids[j]]
				if ok {
					withRow[i]++
					listed[ids[j]] |= 1 << i
				}
				uri := cfg.Source.ObjectURI(o.Key)
				fr, isFailed := failures[ids[j]]
				isFailed = isFailed && fr.ETag == o.ETag
				switch {
				case ok && meta.ETag == o.ETag && meta.ModelVersion == want(i):
					r.OK++
				case isFailed:
					r.Failed++
					r.sample("failed " + uri + ": " + fr.Reason)
					bad[j] = bad[j] || cfg.RetryFailed
				case !ok:
					r.Missing++
					bad[j] = true
					r.sample("missing " + uri)
				default:
					r.Stale++
					bad[j] = true
					r.sample("stale " + uri)
				}
			}
		}
		for j, o := range batch {
			if bad[j] {
				rep.ToEmbed = append(rep.ToEmbed, o)
			}
		}
		batch = batch[:0]
		return nil
	}
	err = cfg.Source.List(ctx, "", func(o objstore.Object) error {
		listed[vecstore.ID(cfg.Source.ObjectURI(o.Key))] |= 0 // present, no bits yet
		batch = append(batch, o)
		if len(batch) == verifyBatch {
			return check()
		}
		return nil
	})
	if err == nil {
		err = check()
	}
	if err != nil {
		return rep, err
	}
	// Rows under the source's prefix that the listing did not name: extra
	// only if the object is really gone (the filter may leave out objects
	// that exist, and an object may have been written since the listing).
	prefix := cfg.Source.RowPrefix()
	for i, col := range cols {
		r := &rep.Models[i]
		// When the collection holds no more rows than the listed objects
		// that have one, there is no other row: the scan (whose cost grows
		// faster than the collection on milvus-lite) is spared.
		if n, err := col.Count(ctx); err != nil {
			return rep, err
		} else if n == withRow[i] {
			continue
		}
		var unlisted, unlistedIDs []string
		var seen int64 // rows of listed objects that have one
		err := col.EachWithPrefix(ctx, prefix, func(id, uri string) error {
			bits, ok := listed[id]
			switch {
			case !ok:
				unlisted, unlistedIDs = append(unlisted, uri), append(unlistedIDs, id)
			case bits&(1<<i) != 0:
				seen++
			}
			return nil
		})
		if err != nil {
			return rep, err
		}
		// What the iterator returned must add up to what the lookups by id
		// found: otherwise it stopped short, and the extra rows it did not
		// return are not known.
		if seen < withRow[i] {
			r.Unscanned = withRow[i] - seen
			r.sample(fmt.Sprintf("the iterator over %s returned %d of the %d rows of listed objects: extra rows may be missed; run verify again", escape.Value(prefix), seen, withRow[i]))
		}
		if err := findDuplicates(ctx, col, prefix, i, listed, withRow[i], unlistedIDs, r, &rep); err != nil {
			return rep, err
		}
		for _, uri := range unlisted {
			gone, err := objectGone(ctx, cfg.Source, uri)
			if err != nil {
				return rep, err
			}
			if !gone {
				rep.Unlisted[r.Model]++
				continue
			}
			r.Extra++
			r.sample("extra " + uri)
			rep.ExtraURIs[r.Model] = append(rep.ExtraURIs[r.Model], uri)
		}
	}
	sort.Slice(rep.ToEmbed, func(a, b int) bool { return rep.ToEmbed[a].Key < rep.ToEmbed[b].Key })
	return rep, nil
}

// maxVerifyModels is how many models one Verify checks: a bit each in the
// listing's map.
const maxVerifyModels = 64

// open opens the collection that Verify checks for model m.
func (cfg VerifyConfig) open(ctx context.Context, m string) (*vecstore.Collection, error) {
	var col *vecstore.Collection
	var err error
	if v := cfg.Versions[m]; v != "" {
		col, err = cfg.Store.OpenVersion(ctx, m, v)
	} else {
		col, err = cfg.Store.Open(ctx, m)
	}
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", m, err)
	}
	return col, nil
}

// findDuplicates looks for ids stored more than once under the source's
// prefix in model i's collection. The query paths answer one row per id, so
// only count(*) sees copies: when the rows under the prefix outnumber the
// distinct ids found (listed ones with a row, and unlisted ones), the
// candidates are counted a chunk at a time and the chunks that hold copies
// halved until the ids are found.
func findDuplicates(ctx context.Context, col *vecstore.Collection, prefix string, i int, listed map[string]uint64,
	withRow int64, unlistedIDs []string, r *ModelReport, rep *VerifyReport) error {
	under, err := col.CountUnder(ctx, prefix)
	if err != nil {
		return err
	}
	if under <= withRow+int64(len(unlistedIDs)) {
		return nil
	}
	cands := make([]string, 0, withRow+int64(len(unlistedIDs)))
	for id, bits := range listed {
		if bits&(1<<i) != 0 {
			cands = append(cands, id)
		}
	}
	cands = append(cands, unlistedIDs...)
	sort.Strings(cands)
	dups, err := col.Duplicated(ctx, cands)
	if err != nil {
		return err
	}
	if len(dups) == 0 {
		return nil // rows that the prefix's LIKE pattern matches beyond it, or written meanwhile
	}
	r.Duplicated = int64(len(dups))
	rep.DuplicateIDs[r.Model] = dups
	rows, err := col.GetMany(ctx, dups[:min(len(dups), 10)])
	if err != nil {
		return err
	}
	for _, id := range dups[:min(len(dups), 10)] {
		if row, ok := rows[id]; ok {
			r.sample("duplicated " + row.URI)
		}
	}
	return nil
}

// verifyBatch is how many listed objects one lookup checks per model. On
// milvus-lite a lookup costs more as the collection grows whatever its
// size, so few large lookups beat many small ones: at 200,000 rows one of
// 2,048 ids took 65 ms against 37 ms for 256 (deploy/bench/lookupscale,
// docs/benchmarks.md), 4.5x the ids per second.
const verifyBatch = 2048

// objectGone reports whether the object of a row URI no longer exists.
func objectGone(ctx context.Context, src objstore.Source, uri string) (bool, error) {
	key, ok := src.KeyOf(uri)
	if !ok {
		return false, nil // not this source's: never deleted from here
	}
	exists, err := src.Stat(ctx, key)
	if err != nil {
		return false, fmt.Errorf("verify: is %s still there: %w", uri, err)
	}
	return !exists, nil
}

func (r *ModelReport) sample(s string) {
	if len(r.Samples) < 10 {
		r.Samples = append(r.Samples, s)
	}
}

// RepairConfig is what Repair needs beyond the verification: where to
// publish the re-embedding run.
type RepairConfig struct {
	Verify   VerifyConfig
	JS       jetstream.JetStream
	Topology bus.Topology
	Out      io.Writer // progress lines; nil: none
}

// Repair makes the index match the source after a Verify found rep: it
// writes each duplicated row back once, publishes a run for the missing and stale objects and waits for the
// workers to finish it, deletes the rows of objects that are gone (each
// checked again just before), and verifies again. It returns the second
// report and the run's summary (zero when nothing was embedded).
func Repair(ctx context.Context, cfg RepairConfig, rep VerifyReport) (VerifyReport, Summary, error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	var sum Summary
	for _, m := range rep.Models {
		ids := rep.DuplicateIDs[m.Model]
		if len(ids) == 0 {
			continue
		}
		col, err := cfg.Verify.open(ctx, m.Model)
		if err != nil {
			return rep, sum, err
		}
		n, err := col.Rewrite(ctx, ids)
		if err != nil {
			return rep, sum, err
		}
		fmt.Fprintf(out, "rewrote %d duplicated rows once each in %s\n", n, col.Name)
	}
	if len(rep.ToEmbed) > 0 {
		journal, err := NewJournal()
		if err != nil {
			return rep, sum, err
		}
		defer journal.Close()
		rec, err := Run(ctx, Config{JS: cfg.JS, Topology: cfg.Topology, Source: Only(cfg.Verify.Source, rep.ToEmbed),
			Models: cfg.Verify.Models, Journal: journal})
		if err != nil {
			return rep, sum, err
		}
		fmt.Fprintf(out, "repair run %s: %d objects to embed\n", rec.ID, rec.Listed)
		sum, err = New(cfg.JS, cfg.Topology).WaitWith(ctx, rec, WaitOptions{Journal: journal})
		if err != nil {
			return rep, sum, err
		}
	}
	models := make([]string, 0, len(rep.ExtraURIs))
	for m := range rep.ExtraURIs {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		var gone []string
		for _, uri := range rep.ExtraURIs[m] {
			ok, err := objectGone(ctx, cfg.Verify.Source, uri)
			if err != nil {
				return rep, sum, err
			}
			if ok {
				gone = append(gone, uri)
			}
		}
		if err := cfg.Verify.Store.DeleteObjects(ctx, m, gone); err != nil {
			return rep, sum, err
		}
		fmt.Fprintf(out, "deleted %d rows of vanished objects from %s", len(gone), m)
		if kept := len(rep.ExtraURIs[m]) - len(gone); kept > 0 {
			fmt.Fprintf(out, " (%d kept: their objects are back)", kept)
		}
		fmt.Fprintln(out)
	}
	again, err := Verify(ctx, cfg.Verify)
	return again, sum, err
}

// Only is a Source that lists just the given objects (sorted by key) and
// reads through src: how a repair publishes exactly what Verify found.
func Only(src objstore.Source, objs []objstore.Object) objstore.Source {
	return only{Source: src, objs: objs}
}

type only struct {
	objstore.Source
	objs []objstore.Object
}

func (o only) List(ctx context.Context, after string, fn func(objstore.Object) error) error {
	for _, obj := range o.objs {
		if obj.Key <= after {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(obj); err != nil {
			return err
		}
	}
	return nil
}
