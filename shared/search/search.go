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
	cols   *sync.Map // model -> cachedCol
	prefix string    // only rows whose URI starts with it (Under)
}

// cachedCol spares a query server one Milvus round trip per request. An
// entry lives for colTTL, and goes at the first error that uses it, so a
// collection dropped and made again is found anew.
type cachedCol struct {
	col *vecstore.Collection
	at  time.Time
}

const colTTL = time.Minute

func (s *Searcher) collection(ctx context.Context, model string) (*vecstore.Collection, error) {
	if c, ok := s.cols.Load(model); ok && time.Since(c.(cachedCol).at) < colTTL {
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

// ByImage finds the k stored images nearest to the image in data.
func (s *Searcher) ByImage(ctx context.Context, model string, data []byte, k int) ([]Hit, error) {
	if s.eng == nil {
		return nil, errors.New("search: no models to embed a query image with")
	}
	v, err := s.eng.EmbedImage(ctx, model, data)
	if err != nil {
		return nil, fmt.Errorf("query image: %w", err)
	}
	return s.ByVector(ctx, model, v, k)
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
	if col.Version != ts.PairsWith.Version {
		return nil, s.forget(image, fmt.Errorf("%w: collection %s was indexed by %s version %s; text model %s pairs with version %s",
			embed.ErrNotPaired, col.Name, image, short(col.Version), ts.Name, short(ts.PairsWith.Version)))
	}
	v, err := s.eng.EmbedText(ctx, ts.Name, text)
	if err != nil {
		return nil, fmt.Errorf("query text: %w", err)
	}
	return s.ByVector(ctx, image, v, k)
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
	return s.ByVector(ctx, model, row.Vector, k)
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
