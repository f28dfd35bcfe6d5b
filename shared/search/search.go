// Package search is the query path that `embedfleet query` and `serve`
// share: embed a query image with the same preprocessing and model as the
// indexed images (or reuse a stored vector), then search the model's
// collection.
//
//	s := search.New(store, imageprep.Limits{})
//	hits, err := s.ByImage(ctx, model, imageBytes, 10)
package search

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// ErrNotIndexed is returned when a query by object names one that is not in
// the collection.
var ErrNotIndexed = errors.New("object not indexed")

// Model is what search needs of a model (embed.Model satisfies it).
type Model interface {
	Spec() embed.Spec
	Params() imageprep.Params
	InputSize() int
	Embed(pixels []float32, n int, out []float32) error
}

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
	store *vecstore.Store
	lim   imageprep.Limits
	opts  []imageprep.DecoderOption
	cols  sync.Map // model -> cachedCol
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

// New returns a Searcher over store. Query images are decoded with lim and
// opts, which should be what the worker indexed with.
func New(store *vecstore.Store, lim imageprep.Limits, opts ...imageprep.DecoderOption) *Searcher {
	return &Searcher{store: store, lim: lim, opts: opts}
}

// Embed turns image bytes into the model's L2-normalised vector.
func (s *Searcher) Embed(m Model, data []byte) ([]float32, error) {
	px := make([]float32, m.InputSize())
	if err := s.Prepare(m, data, px); err != nil {
		return nil, err
	}
	v := make([]float32, m.Spec().Dim)
	if err := m.Embed(px, 1, v); err != nil {
		return nil, err
	}
	return v, nil
}

// Prepare decodes data and writes model m's input tensor for it into px
// (m.InputSize() values), with the Searcher's limits.
func (s *Searcher) Prepare(m Model, data []byte, px []float32) error {
	dec := imageprep.NewDecoder(s.lim, s.opts...)
	defer dec.Close()
	img, _, err := dec.Decode(data)
	if err != nil {
		return err
	}
	pp, err := imageprep.NewPreprocessor(m.Params())
	if err != nil {
		return err
	}
	return pp.Run(img, px)
}

// EmbedBatch embeds many query images at once: decoding and preprocessing
// run on every core, inference in batches of up to batch images (the way
// the worker indexes, so a query set costs what indexing it would). vecs[i]
// is nil where errs[i] says why that image failed; the others still embed.
func (s *Searcher) EmbedBatch(m Model, images [][]byte, batch int) (vecs [][]float32, errs []error) {
	if batch < 1 {
		batch = 1
	}
	n := len(images)
	vecs, errs = make([][]float32, n), make([]error, n)
	in, dim := m.InputSize(), m.Spec().Dim
	px := make([]float32, n*in)
	prepared := make([]bool, n)
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := imageprep.NewDecoder(s.lim, s.opts...)
			defer dec.Close()
			pp, err := imageprep.NewPreprocessor(m.Params())
			for i := range work {
				if err != nil {
					errs[i] = err
					continue
				}
				img, _, derr := dec.Decode(images[i])
				if derr == nil {
					derr = pp.Run(img, px[i*in:(i+1)*in])
				}
				if derr != nil {
					errs[i] = derr
					continue
				}
				prepared[i] = true
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()

	// Pack the images that decoded into batches; a failed one takes no slot.
	ok := make([]int, 0, n)
	for i, p := range prepared {
		if p {
			ok = append(ok, i)
		}
	}
	buf := make([]float32, min(batch, len(ok))*in)
	out := make([]float32, min(batch, len(ok))*dim)
	for start := 0; start < len(ok); start += batch {
		idx := ok[start:min(start+batch, len(ok))]
		for j, i := range idx {
			copy(buf[j*in:(j+1)*in], px[i*in:(i+1)*in])
		}
		if err := m.Embed(buf[:len(idx)*in], len(idx), out[:len(idx)*dim]); err != nil {
			for _, i := range idx {
				errs[i] = err
			}
			continue
		}
		for j, i := range idx {
			vecs[i] = append([]float32(nil), out[j*dim:(j+1)*dim]...)
		}
	}
	return vecs, errs
}

// ByImage finds the k stored images nearest to the image in data.
func (s *Searcher) ByImage(ctx context.Context, m Model, data []byte, k int) ([]Hit, error) {
	v, err := s.Embed(m, data)
	if err != nil {
		return nil, fmt.Errorf("query image: %w", err)
	}
	return s.ByVector(ctx, m.Spec().Name, v, k)
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
	raw, err := col.SearchMany(ctx, vs, k)
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
