package vecstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"github.com/milvus-io/milvus/pkg/v2/util/merr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Model versions, side by side (blue/green upgrades).
//
// A model's first version lives in the collection named after the model
// (CollectionName). Every later version gets a collection of its own,
// VersionedName: the name, "__v" and the first 12 hex digits of the
// version. Workers of each version write their own version's collection
// (Ensure picks it), so an upgrade fills a new collection while queries go
// on answering from the current one.
//
// Which version answers queries is kept in a small collection of this
// package's own (ActiveCollection), one row per model: Open follows it, so
// every query path (query, serve, dedup, verify without a version) switches
// when Activate writes that row. A model without a row is answered by its
// first collection, as before versions existed. milvus-lite has no aliases
// (CreateAlias is Unimplemented there), which is why the pointer is a row
// and not a Milvus alias.

// ActiveCollection holds the active version of every model that has been
// switched at least once.
const ActiveCollection = "embedfleet_active"

// ErrNoVersion is returned when no collection holds the version asked for.
var ErrNoVersion = errors.New("no collection of that version")

// VersionTag is the short form of a model version used in collection
// names: its first 12 hex digits.
func VersionTag(version string) string {
	h := strings.ToLower(strings.TrimPrefix(version, "sha256:"))
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// VersionedName is the collection of one version of a target's vectors,
// for versions after the first: clip-vit-b32 at sha256:3f2a9c... is
// clip_vit_b32__v3f2a9c....
func VersionedName(target, version string) string {
	return CollectionName(target) + "__v" + VersionTag(version)
}

// ofTarget reports whether collection name holds vectors of target: its
// plain name or one of its versioned names.
func ofTarget(name, target string) bool {
	plain := CollectionName(target)
	rest, ok := strings.CutPrefix(name, plain+"__v")
	return name == plain || (ok && rest != "" && !strings.Contains(rest, "_"))
}

func (s *Store) listCollections(ctx context.Context) ([]string, error) {
	names, err := s.c.ListCollections(ctx, milvusclient.NewListCollectionOption())
	if err != nil {
		return nil, s.wrap("list collections", err)
	}
	return names, nil
}

// collectionFor picks the collection that spec's version writes to: the
// plain name when it holds this version, or when the target has no
// collection at all yet; its versioned name otherwise.
func collectionFor(names []string, target, version string) string {
	plain, versioned := CollectionName(target), VersionedName(target, version)
	if version == "" || slices.Contains(names, plain) {
		return plain // checked by the caller; another version moves on
	}
	if slices.Contains(names, versioned) || slices.ContainsFunc(names, func(n string) bool { return ofTarget(n, target) }) {
		return versioned
	}
	return plain
}

// VersionInfo describes one collection of a target.
type VersionInfo struct {
	Collection string `json:"collection"`
	Version    string `json:"version"`
	Dim        int    `json:"dim"`
	Rows       int64  `json:"rows"`
	Active     bool   `json:"active"`
	Previous   bool   `json:"previous"` // what Rollback returns to
	// Order is Milvus's collection id: a collection made later has a
	// larger one.
	Order int64 `json:"order"`
}

// Versions lists the collections of target, one per version, with their
// row counts and which one is active.
func (s *Store) Versions(ctx context.Context, target string) ([]VersionInfo, error) {
	names, err := s.listCollections(ctx)
	if err != nil {
		return nil, err
	}
	act, hasAct, err := s.Active(ctx, target)
	if err != nil {
		return nil, err
	}
	var out []VersionInfo
	for _, n := range names {
		if !ofTarget(n, target) {
			continue
		}
		col, err := s.openNamed(ctx, n, target)
		if err != nil {
			return nil, err
		}
		rows, err := col.Count(ctx)
		if err != nil {
			return nil, err
		}
		vi := VersionInfo{Collection: n, Version: col.Version, Dim: col.Dim, Rows: rows, Order: col.id}
		if hasAct {
			vi.Active = n == act.Collection
			vi.Previous = act.Previous != nil && n == act.Previous.Collection
		} else {
			vi.Active = n == CollectionName(target)
		}
		out = append(out, vi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Order < out[j].Order })
	return out, nil
}

// OpenVersion returns the collection that holds version of target, whether
// it is active or not.
func (s *Store) OpenVersion(ctx context.Context, target, version string) (*Collection, error) {
	if col, err := s.openNamed(ctx, CollectionName(target), target); err == nil && col.Version == version {
		return col, nil
	} else if err != nil && !errors.Is(err, ErrNoCollection) {
		return nil, err
	}
	col, err := s.openNamed(ctx, VersionedName(target, version), target)
	if errors.Is(err, ErrNoCollection) {
		return nil, fmt.Errorf("%w: %s version %s has no collection: index with workers of that version first", ErrNoVersion, target, VersionTag(version))
	}
	if err != nil {
		return nil, err
	}
	if col.Version != version {
		return nil, fmt.Errorf("%w: collection %s holds %s, not %s", ErrModelVersionMismatch, col.Name, col.Version, version)
	}
	return col, nil
}

// FindVersion resolves what a person typed for a version of target (the
// full sha256:..., its hex, a unique prefix of at least 6 hex digits, or
// the name of its collection, as `models versions` prints them) to one of
// target's collections.
func (s *Store) FindVersion(ctx context.Context, target, ref string) (VersionInfo, error) {
	vs, err := s.Versions(ctx, target)
	if err != nil {
		return VersionInfo{}, err
	}
	for _, v := range vs {
		if v.Collection == ref {
			return v, nil
		}
	}
	want := strings.ToLower(strings.TrimPrefix(ref, "sha256:"))
	if len(want) < 6 {
		return VersionInfo{}, fmt.Errorf("version %q: give at least 6 hex digits of it (`embedfleet models versions --model %s` lists them)", clip(ref), target)
	}
	var found []VersionInfo
	for _, v := range vs {
		if strings.HasPrefix(strings.TrimPrefix(v.Version, "sha256:"), want) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return VersionInfo{}, fmt.Errorf("%w: %s has no collection of version %s (it has %s)", ErrNoVersion, target, clip(ref), versionList(vs))
	case 1:
		return found[0], nil
	}
	return VersionInfo{}, fmt.Errorf("version %q of %s is ambiguous: %s", clip(ref), target, versionList(found))
}

func versionList(vs []VersionInfo) string {
	if len(vs) == 0 {
		return "none"
	}
	var b []string
	for _, v := range vs {
		b = append(b, VersionTag(v.Version)+" in "+v.Collection)
	}
	return strings.Join(b, ", ")
}

// ActiveRecord is the active version of a target and the one before it.
type ActiveRecord struct {
	Target     string      `json:"target"`
	Collection string      `json:"collection"`
	Version    string      `json:"version"`
	Previous   *VersionRef `json:"previous,omitempty"`
	Switched   time.Time   `json:"switched"`
}

// VersionRef names one version's collection.
type VersionRef struct {
	Collection string `json:"collection"`
	Version    string `json:"version"`
}

// Meta collection fields. Milvus needs a vector field in every collection;
// the pointer's is two zeros.
const (
	metaKey   = "key"
	metaValue = "value"
	metaVec   = "vec"
)

// Active reads target's active version; found is false when it was never
// switched (its plain collection answers). Any spelling of the model's
// name that makes the same collection name (dinov2-base, dinov2_base) is
// the same model: it finds the same record.
func (s *Store) Active(ctx context.Context, target string) (ActiveRecord, bool, error) {
	recs, err := s.activeRecords(ctx, target)
	if err != nil || len(recs) == 0 {
		return ActiveRecord{}, false, err
	}
	for _, rec := range recs {
		if rec.Target == target {
			return rec, true, nil
		}
	}
	for _, rec := range recs {
		if SameTarget(rec.Target, target) {
			return rec, true, nil
		}
	}
	return ActiveRecord{}, false, nil
}

// SameTarget reports whether two spellings name one model (or set): they
// make the same collection name.
func SameTarget(a, b string) bool { return CollectionName(a) == CollectionName(b) }

// ParseModelRef reads what a person typed for a model: its name
// (dinov2-base), its collection's name (dinov2_base), or a version's
// collection (dinov2_base__v3f2a9c0d1e2b), which names the version too.
// Every spelling resolves to the same model through SameTarget.
func ParseModelRef(ref string) (model, version string) {
	if i := strings.LastIndex(ref, "__v"); i > 0 && ofTarget(ref, ref[:i]) {
		return ref[:i], ref[i+3:]
	}
	return ref, ""
}

// activeRecords reads the active-version records: target's alone when it
// has one under its own spelling, else (and for target "") every record
// (there is one per switched model), so that other spellings are found.
func (s *Store) activeRecords(ctx context.Context, target string) ([]ActiveRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	if !s.metaReady.Load() {
		has, err := s.c.HasCollection(ctx, milvusclient.NewHasCollectionOption(ActiveCollection))
		if err != nil {
			return nil, s.wrap("has collection "+ActiveCollection, err)
		}
		if !has {
			return nil, nil
		}
		s.metaReady.Store(true)
	}
	query := func(filter string, limit int) ([]ActiveRecord, error) {
		rs, err := s.c.Query(ctx, milvusclient.NewQueryOption(ActiveCollection).WithFilter(filter).
			WithOutputFields(metaValue).WithConsistencyLevel(entity.ClStrong).WithLimit(limit))
		if err != nil {
			if errors.Is(err, merr.ErrCollectionNotFound) {
				s.metaReady.Store(false)
				return nil, nil
			}
			return nil, s.wrap("read the active versions", err)
		}
		out := make([]ActiveRecord, 0, rs.ResultCount)
		for i := range rs.ResultCount {
			v, err := rs.GetColumn(metaValue).GetAsString(i)
			if err != nil {
				return nil, fmt.Errorf("vecstore: active versions: %w", err)
			}
			var rec ActiveRecord
			if err := json.Unmarshal([]byte(v), &rec); err != nil {
				return nil, fmt.Errorf("vecstore: active version record: %w", err)
			}
			out = append(out, rec)
		}
		return out, nil
	}
	if target != "" {
		if recs, err := query(metaKey+" == "+quote(target), 1); err != nil || len(recs) > 0 {
			return recs, err
		}
	}
	return query(metaKey+` != ""`, maxActiveRecords)
}

// maxActiveRecords bounds the records read at once: one per model and set.
const maxActiveRecords = 16384

// refuseActive fails when collection name is the active version of any
// model, by any spelling: the one check behind Retire and Drop.
func (s *Store) refuseActive(ctx context.Context, name string) error {
	recs, err := s.activeRecords(ctx, "")
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.Collection == name {
			return fmt.Errorf("%w: collection %s holds the active version of %s: activate another version first", ErrActiveVersion, name, rec.Target)
		}
	}
	return nil
}

// ErrActiveVersion is returned for a change that would take away the
// version that answers a model's queries.
var ErrActiveVersion = errors.New("the active version")

// ensureMeta creates the pointer collection if it is missing.
func (s *Store) ensureMeta(ctx context.Context) error {
	has, err := s.c.HasCollection(ctx, milvusclient.NewHasCollectionOption(ActiveCollection))
	if err != nil {
		return s.wrap("has collection "+ActiveCollection, err)
	}
	if !has {
		schema := entity.NewSchema().WithName(ActiveCollection).WithDescription("embedfleet: the active version of each model").
			WithField(entity.NewField().WithName(metaKey).WithDataType(entity.FieldTypeVarChar).WithMaxLength(256).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName(metaValue).WithDataType(entity.FieldTypeVarChar).WithMaxLength(4096)).
			WithField(entity.NewField().WithName(metaVec).WithDataType(entity.FieldTypeFloatVector).WithDim(2))
		err := s.c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(ActiveCollection, schema).WithConsistencyLevel(entity.ClStrong))
		if err != nil {
			if has, herr := s.c.HasCollection(ctx, milvusclient.NewHasCollectionOption(ActiveCollection)); herr != nil || !has {
				return s.wrap("create collection "+ActiveCollection, err)
			}
		}
	}
	return s.ensureIndexLoaded(ctx, ActiveCollection, metaVec, index.NewFlatIndex(entity.L2))
}

func (s *Store) writeActive(ctx context.Context, rec ActiveRecord) error {
	if err := s.ensureMeta(ctx); err != nil {
		return err
	}
	b, _ := json.Marshal(rec)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	_, err := s.c.Upsert(ctx, milvusclient.NewColumnBasedInsertOption(ActiveCollection).
		WithVarcharColumn(metaKey, []string{rec.Target}).WithVarcharColumn(metaValue, []string{string(b)}).
		WithFloatVectorColumn(metaVec, 2, [][]float32{{0, 0}}))
	if err != nil {
		return s.wrap("switch the active version of "+rec.Target, err)
	}
	s.metaReady.Store(true)
	return nil
}

// current is target's active version as a reference (the pointer's, or
// the plain collection's when there is none; nil when neither), with the
// pointer itself when there is one.
func (s *Store) current(ctx context.Context, target string) (cur *VersionRef, act ActiveRecord, switched bool, err error) {
	act, switched, err = s.Active(ctx, target)
	if err != nil {
		return nil, act, false, err
	}
	if switched {
		return &VersionRef{Collection: act.Collection, Version: act.Version}, act, true, nil
	}
	col, err := s.openNamed(ctx, CollectionName(target), target)
	if errors.Is(err, ErrNoCollection) {
		return nil, act, false, nil
	}
	if err != nil {
		return nil, act, false, err
	}
	return &VersionRef{Collection: col.Name, Version: col.Version}, act, false, nil
}

// AliasName is the Milvus alias that a server points at target's active
// version (Activate, Rollback), so that any Milvus client (Attu, pymilvus)
// reading it sees what embedfleet answers from: clip_vit_b32__active.
func AliasName(target string) string { return CollectionName(target) + "__active" }

// pointAlias points target's alias at collection, in one call (AlterAlias,
// or CreateAlias the first time). milvus-lite has no aliases (Unimplemented):
// there the active-version pointer alone says which version answers.
func (s *Store) pointAlias(ctx context.Context, target, collection string) error {
	if s.noAliases.Load() {
		return nil
	}
	alias := AliasName(target)
	err := s.c.AlterAlias(ctx, milvusclient.NewAlterAliasOption(alias, collection))
	if err != nil && !unimplemented(err) {
		// Not there yet: the first switch makes it.
		cerr := s.c.CreateAlias(ctx, milvusclient.NewCreateAliasOption(collection, alias))
		if cerr == nil {
			return nil
		}
		if !unimplemented(cerr) {
			return s.wrap("point alias "+alias+" at "+collection, err)
		}
		err = cerr
	}
	if unimplemented(err) {
		s.noAliases.Store(true)
		return nil
	}
	return err
}

// unimplemented reports a server that lacks the call (milvus-lite's
// aliases).
func unimplemented(err error) bool {
	st, ok := status.FromError(err)
	return err != nil && (ok && st.Code() == codes.Unimplemented || strings.Contains(strings.ToLower(err.Error()), "unimplemented"))
}

// Activate makes col the collection that answers target's queries, in one
// write (and, on a server, points AliasName(target) at it first); the one
// it replaces becomes Previous, for Rollback. Checking that col is
// complete is the caller's business (see coordinator.Verify).
func (s *Store) Activate(ctx context.Context, target string, col *Collection) (ActiveRecord, error) {
	prev, act, switched, err := s.current(ctx, target)
	if err != nil {
		return ActiveRecord{}, err
	}
	if switched {
		target = act.Target // the spelling the record has
	}
	rec := ActiveRecord{Target: target, Collection: col.Name, Version: col.Version, Switched: time.Now().UTC()}
	if prev != nil && prev.Collection != col.Name {
		rec.Previous = prev
	} else if switched {
		rec.Previous = act.Previous // activating the active one again keeps its way back
	}
	if err := s.pointAlias(ctx, target, col.Name); err != nil {
		return ActiveRecord{}, err
	}
	return rec, s.writeActive(ctx, rec)
}

// Rollback makes target's previous version active again (and the one it
// replaces the previous, so a second Rollback undoes the first).
func (s *Store) Rollback(ctx context.Context, target string) (ActiveRecord, error) {
	act, ok, err := s.Active(ctx, target)
	if err != nil {
		return ActiveRecord{}, err
	}
	if !ok || act.Previous == nil {
		return ActiveRecord{}, fmt.Errorf("%w: %s has never been switched to another version: nothing to roll back to", ErrNoVersion, target)
	}
	col, err := s.openNamed(ctx, act.Previous.Collection, target)
	if err != nil {
		return ActiveRecord{}, fmt.Errorf("roll %s back to %s: %w (was it retired?)", target, act.Previous.Collection, err)
	}
	rec := ActiveRecord{Target: act.Target, Collection: col.Name, Version: col.Version, Switched: time.Now().UTC(),
		Previous: &VersionRef{Collection: act.Collection, Version: act.Version}}
	if err := s.pointAlias(ctx, act.Target, col.Name); err != nil {
		return ActiveRecord{}, err
	}
	return rec, s.writeActive(ctx, rec)
}

// CheckRetire says whether Retire would drop version v of target: not
// when it is the active version of target or of any model, by any
// spelling.
func (s *Store) CheckRetire(ctx context.Context, target string, v VersionInfo) error {
	_, _, err := s.checkRetire(ctx, target, v)
	return err
}

func (s *Store) checkRetire(ctx context.Context, target string, v VersionInfo) (ActiveRecord, bool, error) {
	cur, act, switched, err := s.current(ctx, target)
	if err != nil {
		return act, false, err
	}
	if cur != nil && cur.Collection == v.Collection {
		return act, false, fmt.Errorf("%w: collection %s holds the active version of %s: activate another version first", ErrActiveVersion, v.Collection, target)
	}
	if !ofTarget(v.Collection, target) {
		return act, false, fmt.Errorf("collection %s is not one of %s's", v.Collection, target)
	}
	return act, switched, s.refuseActive(ctx, v.Collection)
}

// Retire drops the collection of one version of target, which must not be
// the active one (CheckRetire).
func (s *Store) Retire(ctx context.Context, target string, v VersionInfo) error {
	act, switched, err := s.checkRetire(ctx, target, v)
	if err != nil {
		return err
	}
	if err := s.c.DropCollection(ctx, milvusclient.NewDropCollectionOption(v.Collection)); err != nil {
		return s.wrap("drop collection "+v.Collection, err)
	}
	if switched && act.Previous != nil && act.Previous.Collection == v.Collection {
		act.Previous = nil
		return s.writeActive(ctx, act)
	}
	return nil
}
