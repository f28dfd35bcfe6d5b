// Package search is the query path that `embedfleet query` and `serve`
// share: embed a query image (or, with a text tower, a text) through the
// engine, with the same preprocessing and model as the indexed images, or
// reuse a stored vector, then search the image model's collection.
//
//	s := search.New(store, eng)
//	hits, err := s.ByImage(ctx, "clip-vit-b32", imageBytes, 10)
//	hits, err = s.ByText(ctx, "clip-vit-b32", "a photo of a cat", 10)
package search

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// ErrNotIndexed is returned when a query by object names one that is not in
// the collection.
var ErrNotIndexed = errors.New("object not indexed")

// ErrVersionNotServed is returned for a query that needs embedding when
// the collection that answers it (the model's active version) holds
// vectors of a model version this process has not loaded.
var ErrVersionNotServed = errors.New("model version not loaded")

// Hit is one ranked result.
type Hit struct {
	Rank   int     `json:"rank"`
	ID     string  `json:"id"`
	URI    string  `json:"uri"`
	Cosine float64 `json:"cosine"`
	Score  float64 `json:"score"` // the article's (cos+1)/2
}

// Searcher runs queries. Safe for concurrent use.
type Searcher struct {
	store  *vecstore.Store
	eng    *engine.Engine
	cols   *sync.Map            // model -> cachedCol
	prefix string               // only rows whose URI starts with it (Under)
	pin    *vecstore.Collection // In: every search of pin.Model goes here
}

// cachedCol spares a query server Milvus round trips on every request. An
// entry lives for ActiveRefresh, and goes at the first error that uses
// it, so a collection dropped and made again is found anew.
type cachedCol struct {
	col *vecstore.Collection
	at  time.Time
}

// ActiveRefresh is how long a Searcher keeps the collection that answers
// a model: a switch of the active version (vecstore.Activate) reaches
// every query server within it. Each answer comes whole from one version.
const ActiveRefresh = 2 * time.Second

func (s *Searcher) collection(ctx context.Context, model string) (*vecstore.Collection, error) {
	if s.pin != nil && s.pin.Model == model {
		return s.pin, nil
	}
	if c, ok := s.cols.Load(model); ok && time.Since(c.(cachedCol).at) < ActiveRefresh {
		return c.(cachedCol).col, nil
	}
	col, err := s.store.Open(ctx, model)
	if err != nil {
		return nil, err
	}
	s.cols.Store(model, cachedCol{col: col, at: time.Now()})
	return col, nil
}

// forget drops model's cached collection when err says it may be stale.
func (s *Searcher) forget(model string, err error) error {
	if err != nil {
		s.cols.Delete(model)
	}
	return err
}

// New returns a Searcher over store that embeds queries with eng (nil:
// queries by stored vector only).
func New(store *vecstore.Store, eng *engine.Engine) *Searcher {
	return &Searcher{store: store, eng: eng, cols: &sync.Map{}}
}

// Under returns a Searcher whose searches answer only with rows whose URI
// starts with uriPrefix (an s3://bucket/folder/ or a folder path; "" for
// all). It shares s's collection cache.
func (s *Searcher) Under(uriPrefix string) *Searcher {
	c := *s
	c.prefix = uriPrefix
	return &c
}

// Resolve returns the collection that answers model's queries now: its
// active version's.
func (s *Searcher) Resolve(ctx context.Context, model string) (*vecstore.Collection, error) {
	return s.collection(ctx, model)
}

// In returns a Searcher whose every search of col's model goes to col, so
// that the parts of one answer (embedding the query, searching, reading
// stored vectors) all use one version even if the active one switches
// meanwhile. It shares s's cache.
func (s *Searcher) In(col *vecstore.Collection) *Searcher {
	c := *s
	c.pin = col
	return &c
}

// EncoderFor is the engine model that embeds queries for col, a
// collection of image model model: the loaded model of col's version.
func (s *Searcher) EncoderFor(model string, col *vecstore.Collection) (string, error) {
	if s.eng == nil {
		return "", errors.New("search: no models to embed a query image with")
	}
	if col.Version == "" {
		return model, nil // a collection that records no version
	}
	key := engine.Versioned(model, col.Version)
	if _, ok := s.eng.Spec(key); ok {
		return key, nil
	}
	loaded := s.eng.Versions(model)
	if len(loaded) == 0 {
		return model, nil // not served at all: the engine says so
	}
	var tags []string
	for _, v := range loaded {
		tags = append(tags, vecstore.VersionTag(v))
	}
	return "", fmt.Errorf("%w: collection %s answers %s and holds vectors of version %s; this process has %v loaded. "+
		"Load that version too (--models takes a model folder; give both versions during an upgrade)",
		ErrVersionNotServed, col.Name, model, vecstore.VersionTag(col.Version), tags)
}

// ByImage finds the k stored images nearest to the image in data,
// embedded by the model version of the collection that answers.
func (s *Searcher) ByImage(ctx context.Context, model string, data []byte, k int) ([]Hit, error) {
	if s.eng == nil {
		return nil, errors.New("search: no models to embed a query image with")
	}
	col, err := s.collection(ctx, model)
	if err != nil {
		return nil, err
	}
	enc, err := s.EncoderFor(model, col)
	if err != nil {
		return nil, err
	}
	v, err := s.eng.EmbedImage(ctx, enc, data)
	if err != nil {
		return nil, fmt.Errorf("query image: %w", err)
	}
	return s.In(col).ByVector(ctx, model, v, k)
}

// ByText finds the k stored images nearest to a text, embedded by the text
// tower that pairs with image model model (or by model itself, when it
// names a text tower). The collection searched is the image model's, and
// it must hold the very version the text tower pairs with: a text vector
// is meaningless against another tower's images.
func (s *Searcher) ByText(ctx context.Context, model, text string, k int) ([]Hit, error) {
	if s.eng == nil {
		return nil, errors.New("search: no text model to embed a query text with")
	}
	ts, ok := s.eng.TextFor(model)
	if !ok {
		return nil, fmt.Errorf("%w: no text model that pairs with %q is loaded (CLIP's is clip-vit-b32-text: "+
			"`embedfleet models pull --model clip-vit-b32-text ...`, or export it with deploy/export/export.py)", engine.ErrUnknownModel, model)
	}
	image := ts.PairsWith.Name
	col, err := s.collection(ctx, image)
	if err != nil {
		return nil, err
	}
	if tv, ok := s.eng.TextForVersion(image, col.Version); ok {
		ts = tv
	} else {
		return nil, s.forget(image, fmt.Errorf("%w: collection %s was indexed by %s version %s; text model %s pairs with version %s",
			embed.ErrNotPaired, col.Name, image, short(col.Version), ts.Name, short(ts.PairsWith.Version)))
	}
	v, err := s.eng.EmbedText(ctx, engine.Versioned(ts.Name, ts.Version), text)
	if err != nil {
		return nil, fmt.Errorf("query text: %w", err)
	}
	return s.In(col).ByVector(ctx, image, v, k)
}

func short(v string) string {
	if len(v) > 19 {
		return v[:19]
	}
	return v
}

// ByObject finds the k stored images nearest to an already indexed object
// (its URI), reusing its stored vector; the object itself ranks first.
func (s *Searcher) ByObject(ctx context.Context, model, objectURI string, k int) ([]Hit, error) {
	return s.byStored(ctx, model, vecstore.ID(objectURI), objectURI, k)
}

// ByID is ByObject by primary key (the id of a hit) instead of URI.
func (s *Searcher) ByID(ctx context.Context, model, id string, k int) ([]Hit, error) {
	return s.byStored(ctx, model, id, "id "+id, k)
}

func (s *Searcher) byStored(ctx context.Context, model, id, what string, k int) ([]Hit, error) {
	col, err := s.collection(ctx, model)
	if err != nil {
		return nil, err
	}
	row, found, err := col.Get(ctx, id)
	if err != nil {
		return nil, s.forget(model, err)
	}
	if !found {
		return nil, fmt.Errorf("%w: %s is not indexed in %s", ErrNotIndexed, what, col.Name)
	}
	return s.In(col).ByVector(ctx, model, row.Vector, k)
}

// ByVector searches model's collection with a query vector.
func (s *Searcher) ByVector(ctx context.Context, model string, v []float32, k int) ([]Hit, error) {
	hits, err := s.ByVectors(ctx, model, [][]float32{v}, k)
	if err != nil {
		return nil, err
	}
	return hits[0], nil
}

// ByVectors searches model's collection with many query vectors in one
// request; hits[i] answers vs[i].
func (s *Searcher) ByVectors(ctx context.Context, model string, vs [][]float32, k int) ([][]Hit, error) {
	if k < 1 {
		return nil, fmt.Errorf("top-k must be at least 1, got %d", k)
	}
	col, err := s.collection(ctx, model)
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		if col.Dim != len(v) {
			return nil, s.forget(model, fmt.Errorf("collection %s holds %d-d vectors, the query has %d", col.Name, col.Dim, len(v)))
		}
	}
	raw, err := col.SearchManyUnder(ctx, vs, k, s.prefix)
	if err != nil {
		return nil, s.forget(model, err)
	}
	out := make([][]Hit, len(raw))
	for q, rs := range raw {
		hits := make([]Hit, len(rs))
		for i, h := range rs {
			hits[i] = Hit{Rank: i + 1, ID: h.ID, URI: h.URI, Cosine: h.Cosine, Score: (h.Cosine + 1) / 2}
		}
		out[q] = hits
	}
	return out, nil
}
