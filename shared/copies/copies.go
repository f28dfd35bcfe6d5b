// Package copies decides whether one image is a copy of another and finds
// the copies inside a whole collection.
//
// Copy detection ranks candidates by cosine like any search, but a raw
// cosine means different things for different queries: a photo of a plain
// sky is close to every other sky. Copy-detection research normalises each
// score against a background set of unrelated images (SSCD, Pizzi et al.
// 2022, equation 8): a candidate's score is its cosine less beta times the
// mean cosine of the query's n nearest background images, so a score above
// zero says "closer than anything unrelated is". The default recipe is
// SSCD's published one, beta 1 and the 3 nearest ([0,2] in its
// evaluation).
//
// Pairs fall into three tiers, reported separately: exact (the same bytes:
// the workers store a sha256 of every object), copy (a normalised score at
// or above a calibrated threshold; `embedfleet bench copydetect
// --background` prints the thresholds for 90, 95 and 99% precision) and
// similar (a lower plain-cosine threshold, off unless asked for).
//
// Checker answers "is this a copy of something we hold?" for query, serve
// and the benchmark; Dedup groups a whole collection's copies.
package copies

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// Tier is how closely two images match.
type Tier string

// The tiers, strongest first. Linked is not a tier of a pair: it marks a
// group member that is below every threshold against the group's
// representative and joined the group through another member.
const (
	Exact   Tier = "exact"
	Copy    Tier = "copy"
	Similar Tier = "similar"
	Linked  Tier = "linked"
)

// rank orders tiers: higher is stronger; "" and Linked are 0.
func (t Tier) rank() int {
	switch t {
	case Exact:
		return 3
	case Copy:
		return 2
	case Similar:
		return 1
	}
	return 0
}

// AtLeast reports whether t is as strong as u.
func (t Tier) AtLeast(u Tier) bool { return t.rank() >= u.rank() && t.rank() > 0 }

// ParseTier reads a tier's name.
func ParseTier(s string) (Tier, error) {
	switch t := Tier(s); t {
	case Exact, Copy, Similar:
		return t, nil
	}
	return "", fmt.Errorf("tier %q: want exact, copy or similar", s)
}

// Recipe is how scores are normalised: score = cosine - Beta * the mean
// cosine of the query's N nearest background images.
type Recipe struct {
	Beta float64
	N    int
}

// DefaultRecipe is SSCD's: beta 1, the 3 nearest background neighbours.
func DefaultRecipe() Recipe { return Recipe{Beta: 1, N: 3} }

// Validate checks r.
func (r Recipe) Validate() error {
	if r.N < 1 || r.N > 100 {
		return fmt.Errorf("copies: background neighbours (n) must be 1 to 100, got %d", r.N)
	}
	if r.Beta < 0 || r.Beta > 10 {
		return fmt.Errorf("copies: beta must be 0 to 10, got %g", r.Beta)
	}
	return nil
}

// Thresholds decide the tiers. Copy applies to the normalised score (to
// the raw cosine when there is no background set); Similar to the raw
// cosine, and 0 turns the similar tier off.
type Thresholds struct {
	Copy    float64
	Similar float64
}

// Default copy thresholds, for when none was calibrated: a normalised
// score above DefaultNormalisedThreshold is clearly closer than the
// nearest unrelated images; DefaultRawThreshold is a conservative raw
// cosine. Both are starting points: calibrate on your model and images
// (docs/operations.md says how).
const (
	DefaultNormalisedThreshold = 0.05
	DefaultRawThreshold        = 0.95
)

// Validate checks th.
func (th Thresholds) Validate() error {
	if th.Copy < -2 || th.Copy > 2 {
		return fmt.Errorf("copies: copy threshold %g is outside [-2, 2]", th.Copy)
	}
	if th.Similar < 0 || th.Similar > 1 {
		return fmt.Errorf("copies: similar threshold %g is outside [0, 1] (0: off)", th.Similar)
	}
	return nil
}

// TierOf sorts a pair: sameBytes (their content hashes are equal), its
// cosine and its score (normalised, or the cosine).
func (th Thresholds) TierOf(sameBytes bool, cosine, score float64) Tier {
	switch {
	case sameBytes:
		return Exact
	case score >= th.Copy:
		return Copy
	case th.Similar > 0 && cosine >= th.Similar:
		return Similar
	}
	return ""
}

// ErrEmptyBackground is returned when the background collection holds no vectors.
var ErrEmptyBackground = errors.New("background set is empty")

// ErrBackgroundVersion is returned when the background set was embedded by another version
// of the model than the collection it normalises.
var ErrBackgroundVersion = errors.New("background set of another model version")

// Scorer turns cosines into normalised scores against a background
// collection; without one (Background nil) a score is the cosine.
type Scorer struct {
	Background *vecstore.Collection
	Recipe     Recipe
}

// Normalised reports whether scores are normalised.
func (s Scorer) Normalised() bool { return s.Background != nil }

// Bias is, for each vector, what is taken from its cosines: Beta times the
// mean cosine of its N nearest background vectors (one search request for
// all of them); zeros without a background.
func (s Scorer) Bias(ctx context.Context, vecs [][]float32) ([]float64, error) {
	out := make([]float64, len(vecs))
	if s.Background == nil || len(vecs) == 0 {
		return out, nil
	}
	hits, err := s.Background.SearchMany(ctx, vecs, s.Recipe.N)
	if err != nil {
		return nil, fmt.Errorf("background neighbours: %w", err)
	}
	for i, hs := range hits {
		if len(hs) == 0 {
			return nil, fmt.Errorf("%w: collection %s answered no neighbours (embed a background set: docs/operations.md)", ErrEmptyBackground, s.Background.Name)
		}
		sum := 0.0
		for _, h := range hs {
			sum += h.Cosine
		}
		out[i] = s.Recipe.Beta * sum / float64(len(hs))
	}
	return out, nil
}

// Match is one candidate copy of a query.
type Match struct {
	ID     string  `json:"id"`
	URI    string  `json:"uri"`
	Cosine float64 `json:"cosine"`
	// Score is the normalised score (cosine less the query's background
	// bias); the cosine when there is no background set.
	Score float64 `json:"score"`
	Tier  Tier    `json:"tier,omitempty"` // "" below every threshold
	// IsCopy is the verdict: the tier is exact or copy.
	IsCopy bool `json:"copy"`
}

// Query is one image to check: its vector, its content hash ("" when
// unknown) and, when it is itself an indexed row, that row's id (left out
// of its own matches).
type Query struct {
	Vector []float32
	SHA256 string
	Self   string
}

// Checker answers copy queries against a model's collection, normalised
// against the model's background set when there is one (vecstore.Target(model,
// vecstore.SetBackground)). Safe for concurrent use.
type Checker struct {
	Store      *vecstore.Store
	Recipe     Recipe
	Thresholds Thresholds
	// RawThresholds applies where a model has no background set (then the
	// scores are raw cosines). Zero: Copy DefaultRawThreshold and Thresholds.Similar.
	RawThresholds *Thresholds

	mu    sync.Mutex
	cache map[string]cachedPair
}

type cachedPair struct {
	col, bg *vecstore.Collection
	at      time.Time
}

// cacheTTL is how long a Checker keeps a model's collections: a switch of
// the active version reaches it within that (as search.ActiveRefresh).
const cacheTTL = 2 * time.Second

// Collections opens model's collection and its background set (nil when
// the model has none), checking that both hold the same model version.
func (c *Checker) Collections(ctx context.Context, model string) (col, bg *vecstore.Collection, err error) {
	c.mu.Lock()
	p, ok := c.cache[model]
	c.mu.Unlock()
	if ok && time.Since(p.at) < cacheTTL {
		return p.col, p.bg, nil
	}
	col, bg, err = OpenPair(ctx, c.Store, model)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]cachedPair{}
	}
	c.cache[model] = cachedPair{col: col, bg: bg, at: time.Now()}
	c.mu.Unlock()
	return col, bg, nil
}

func (c *Checker) forget(model string) {
	c.mu.Lock()
	delete(c.cache, model)
	c.mu.Unlock()
}

// OpenPair opens model's collection and its background set (bg is nil when
// there is none, or it is empty); a background set of another version is
// an error.
func OpenPair(ctx context.Context, store *vecstore.Store, model string) (col, bg *vecstore.Collection, err error) {
	col, err = store.Open(ctx, model)
	if err != nil {
		return nil, nil, err
	}
	// The background of the active version: a set embedded by the same
	// version (after an upgrade, each version has its own).
	bgTarget := vecstore.Target(model, vecstore.SetBackground)
	if col.Version != "" {
		bg, err = store.OpenVersion(ctx, bgTarget, col.Version)
		if errors.Is(err, vecstore.ErrNoVersion) {
			bg, err = store.Open(ctx, bgTarget) // another version's, refused below
		}
	} else {
		bg, err = store.Open(ctx, bgTarget)
	}
	if errors.Is(err, vecstore.ErrNoCollection) {
		return col, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if bg.Version != col.Version {
		return nil, nil, fmt.Errorf("%w: %s was embedded by %s, collection %s by %s: embed the background again with this version",
			ErrBackgroundVersion, bg.Name, short(bg.Version), col.Name, short(col.Version))
	}
	if n, err := bg.Count(ctx); err != nil {
		return nil, nil, err
	} else if n == 0 {
		return col, nil, nil
	}
	return col, bg, nil
}

func short(v string) string {
	if len(v) > 19 {
		return v[:19]
	}
	return v
}

// Normalised reports whether model's scores are normalised (it has a
// background set).
func (c *Checker) Normalised(ctx context.Context, model string) (bool, error) {
	_, bg, err := c.Collections(ctx, model)
	return bg != nil, err
}

// ThresholdsFor are the thresholds that apply with (normalised) or without
// a background set.
func (c *Checker) ThresholdsFor(normalised bool) Thresholds {
	if normalised {
		return c.Thresholds
	}
	if c.RawThresholds != nil {
		return *c.RawThresholds
	}
	return Thresholds{Copy: DefaultRawThreshold, Similar: c.Thresholds.Similar}
}

// Check answers each query with its k best candidates in model's
// collection, best score first, each with its tier and verdict.
func (c *Checker) Check(ctx context.Context, model string, qs []Query, k int) ([][]Match, bool, error) {
	return c.CheckUnder(ctx, model, qs, k, "")
}

// CheckUnder is Check among the rows whose URI starts with uriPrefix (all
// of them for ""): the candidates, not the background set, are narrowed.
func (c *Checker) CheckUnder(ctx context.Context, model string, qs []Query, k int, uriPrefix string) ([][]Match, bool, error) {
	col, bg, err := c.Collections(ctx, model)
	if err != nil {
		return nil, false, err
	}
	sc := Scorer{Background: bg, Recipe: c.Recipe}
	out, err := check(ctx, col, sc, c.ThresholdsFor(bg != nil), qs, k, uriPrefix)
	if err != nil {
		c.forget(model)
	}
	return out, bg != nil, err
}

// check is Check on opened collections.
func check(ctx context.Context, col *vecstore.Collection, sc Scorer, th Thresholds, qs []Query, k int, uriPrefix string) ([][]Match, error) {
	if k < 1 {
		return nil, fmt.Errorf("copies: k must be at least 1, got %d", k)
	}
	vecs := make([][]float32, len(qs))
	for i, q := range qs {
		if len(q.Vector) != col.Dim {
			return nil, fmt.Errorf("copies: collection %s holds %d-d vectors, query %d has %d", col.Name, col.Dim, i, len(q.Vector))
		}
		vecs[i] = q.Vector
	}
	bias, err := sc.Bias(ctx, vecs)
	if err != nil {
		return nil, err
	}
	hits, err := col.SearchManyUnder(ctx, vecs, k+1, uriPrefix) // one more: the query's own row
	if err != nil {
		return nil, err
	}
	out := make([][]Match, len(qs))
	for i, hs := range hits {
		ms := make([]Match, 0, k)
		for _, h := range hs {
			if h.ID == qs[i].Self || len(ms) == k {
				continue
			}
			same := qs[i].SHA256 != "" && h.SHA256 == qs[i].SHA256
			score := h.Cosine - bias[i]
			t := th.TierOf(same, h.Cosine, score)
			ms = append(ms, Match{ID: h.ID, URI: h.URI, Cosine: h.Cosine, Score: score, Tier: t, IsCopy: t.AtLeast(Copy)})
		}
		// Normalising subtracts one bias per query, so the order by
		// cosine is the order by score, but an exact match ranks first.
		for j := 1; j < len(ms); j++ {
			for m := j; m > 0 && ms[m].Tier == Exact && ms[m-1].Tier != Exact; m-- {
				ms[m], ms[m-1] = ms[m-1], ms[m]
			}
		}
		out[i] = ms
	}
	return out, nil
}
