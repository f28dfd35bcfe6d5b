package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strings"

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
	// Versions are the expected model versions; a model missing here is
	// checked against its collection's recorded version.
	Versions map[string]string
}

// ModelReport is what Verify found for one model.
type ModelReport struct {
	Model   string   `json:"model"`
	Listed  int64    `json:"listed"`
	OK      int64    `json:"ok"`
	Missing int64    `json:"missing"` // listed, no row
	Stale   int64    `json:"stale"`   // a row with another ETag or model version
	Extra   int64    `json:"extra"`   // a row for an object no longer listed
	Samples []string `json:"samples,omitempty"`
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Models []ModelReport `json:"models"`
	// ToEmbed are the objects missing or stale in at least one model, in key
	// order; ExtraURIs the rows to delete, per model.
	ToEmbed   []objstore.Object   `json:"-"`
	ExtraURIs map[string][]string `json:"-"`
}

// Clean reports whether nothing is missing, stale or extra.
func (r VerifyReport) Clean() bool {
	for _, m := range r.Models {
		if m.Missing+m.Stale+m.Extra > 0 {
			return false
		}
	}
	return true
}

// Verify checks a source against Milvus. Memory grows with the number of
// listed objects (one id each) and of objects to repair.
func Verify(ctx context.Context, cfg VerifyConfig) (VerifyReport, error) {
	rep := VerifyReport{ExtraURIs: map[string][]string{}}
	cols := make([]*vecstore.Collection, len(cfg.Models))
	for i, m := range cfg.Models {
		col, err := cfg.Store.Open(ctx, m)
		if err != nil {
			return rep, fmt.Errorf("verify %s: %w", m, err)
		}
		cols[i] = col
		rep.Models = append(rep.Models, ModelReport{Model: m})
	}
	want := func(i int) string {
		if v := cfg.Versions[cfg.Models[i]]; v != "" {
			return v
		}
		return cols[i].Version
	}
	listed := map[string]bool{}
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
				switch {
				case !ok:
					r.Missing++
					bad[j] = true
					r.sample("missing " + cfg.Source.ObjectURI(o.Key))
				case meta.ETag != o.ETag || meta.ModelVersion != want(i):
					r.Stale++
					bad[j] = true
					r.sample("stale " + cfg.Source.ObjectURI(o.Key))
				default:
					r.OK++
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
	err := cfg.Source.List(ctx, "", func(o objstore.Object) error {
		listed[vecstore.ID(cfg.Source.ObjectURI(o.Key))] = true
		batch = append(batch, o)
		if len(batch) == 256 {
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
	prefix := strings.TrimSuffix(cfg.Source.URI(), "/")
	for i, col := range cols {
		r := &rep.Models[i]
		err := col.EachWithPrefix(ctx, prefix, func(id, uri string) error {
			if !listed[id] {
				r.Extra++
				r.sample("extra " + uri)
				rep.ExtraURIs[r.Model] = append(rep.ExtraURIs[r.Model], uri)
			}
			return nil
		})
		if err != nil {
			return rep, err
		}
	}
	sort.Slice(rep.ToEmbed, func(a, b int) bool { return rep.ToEmbed[a].Key < rep.ToEmbed[b].Key })
	return rep, nil
}

func (r *ModelReport) sample(s string) {
	if len(r.Samples) < 10 {
		r.Samples = append(r.Samples, s)
	}
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
