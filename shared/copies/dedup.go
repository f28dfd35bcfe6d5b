package copies

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// DedupConfig says what Dedup scans and how it decides.
type DedupConfig struct {
	Collection *vecstore.Collection
	Scorer     Scorer
	Thresholds Thresholds
	// Prefix limits the scan, and the candidates, to rows whose URI starts
	// with it ("" for all).
	Prefix string
	K      int // nearest neighbours looked at per vector; default 10
	// Batch is how many vectors go in one search request; default 256.
	Batch    int
	Progress func(Progress) // called after every batch; may be nil
}

// Progress is how far a Dedup has come.
type Progress struct {
	Scanned, Total int64 // vectors searched; rows in the collection
	Pairs          int   // pairs kept so far
	Elapsed        time.Duration
}

// Pair is two rows (A < B by id) whose best score, from either side's
// search, reached a tier.
type Pair struct {
	A, B   string
	Cosine float64
	Score  float64
	Tier   Tier
}

// Member is one row of a group, scored against the group's
// representative.
type Member struct {
	Group          string  `json:"group"`
	ID             string  `json:"id"`
	URI            string  `json:"uri"`
	Cosine         float64 `json:"cosine"` // to the representative (1 for itself)
	Score          float64 `json:"score"`  // normalised, or the cosine
	Tier           Tier    `json:"tier"`   // against the representative; Linked when below every threshold
	Representative bool    `json:"representative,omitempty"`
}

// Group is a set of rows joined by pairs of its tier or stronger.
type Group struct {
	ID      string   `json:"group"`
	Tier    Tier     `json:"tier"`
	Members []Member `json:"members"` // the representative first, then by score
}

// Result is what Dedup found.
type Result struct {
	Scanned    int64
	Pairs      map[Tier]int // pairs by tier
	Groups     []Group      // exact groups, then copy, then similar; largest first in each
	HasHashes  bool         // the collection stores content hashes (the exact tier works)
	Normalised bool
	Took       time.Duration
}

// Dedup finds the copies in a collection: it reads every vector with a
// query iterator, searches each one's K nearest in bulk (Batch vectors per
// request), keeps the pairs that reach a tier, and joins them into groups
// (union-find), one grouping per tier: exact groups join rows with the same
// bytes; copy groups join by exact or copy pairs; similar groups by any
// pair. Memory grows with the pairs kept, not with the collection; the cost
// is one search per vector (N*K candidates), never N*N.
func Dedup(ctx context.Context, cfg DedupConfig) (*Result, error) {
	col := cfg.Collection
	if col == nil {
		return nil, fmt.Errorf("copies: dedup needs a collection")
	}
	if err := cfg.Thresholds.Validate(); err != nil {
		return nil, err
	}
	if cfg.Scorer.Normalised() {
		if err := cfg.Scorer.Recipe.Validate(); err != nil {
			return nil, err
		}
	}
	if cfg.K <= 0 {
		cfg.K = 10
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	start := time.Now()
	total, err := col.Count(ctx)
	if err != nil {
		return nil, err
	}
	res := &Result{Pairs: map[Tier]int{}, HasHashes: col.HasSHA256, Normalised: cfg.Scorer.Normalised()}
	pairs := map[[2]string]*Pair{}
	uris := map[string]string{}
	err = col.Scan(ctx, cfg.Prefix, cfg.Batch, func(rows []vecstore.Row) error {
		vecs := make([][]float32, len(rows))
		for i, r := range rows {
			vecs[i] = r.Vector
		}
		bias, err := cfg.Scorer.Bias(ctx, vecs)
		if err != nil {
			return err
		}
		hits, err := col.SearchManyUnder(ctx, vecs, cfg.K+1, cfg.Prefix)
		if err != nil {
			return err
		}
		for i, r := range rows {
			for _, h := range hits[i] {
				if h.ID == r.ID {
					continue
				}
				same := r.SHA256 != "" && h.SHA256 == r.SHA256
				score := h.Cosine - bias[i]
				t := cfg.Thresholds.TierOf(same, h.Cosine, score)
				if t == "" {
					continue
				}
				key := [2]string{min(r.ID, h.ID), max(r.ID, h.ID)}
				p := pairs[key]
				if p == nil {
					p = &Pair{A: key[0], B: key[1]}
					pairs[key] = p
				}
				p.Cosine, p.Score = max(p.Cosine, h.Cosine), max(p.Score, score)
				if t.rank() > p.Tier.rank() {
					p.Tier = t
				}
				uris[r.ID], uris[h.ID] = r.URI, h.URI
			}
		}
		res.Scanned += int64(len(rows))
		if cfg.Progress != nil {
			cfg.Progress(Progress{Scanned: res.Scanned, Total: total, Pairs: len(pairs), Elapsed: time.Since(start)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	all := make([]Pair, 0, len(pairs))
	for _, p := range pairs {
		all = append(all, *p)
		res.Pairs[p.Tier]++
	}
	slices.SortFunc(all, func(a, b Pair) int { return cmp.Or(cmp.Compare(a.A, b.A), cmp.Compare(a.B, b.B)) })
	tiers := []Tier{Exact, Copy}
	if cfg.Thresholds.Similar > 0 {
		tiers = append(tiers, Similar)
	}
	for _, t := range tiers {
		gs, err := groupTier(ctx, cfg, t, all, uris)
		if err != nil {
			return nil, err
		}
		res.Groups = append(res.Groups, gs...)
	}
	res.Took = time.Since(start)
	return res, nil
}

// groupTier joins the pairs of tier t or stronger into groups and scores
// every member against its group's representative: the member with the
// most pairs in the group (the smallest URI among equals).
func groupTier(ctx context.Context, cfg DedupConfig, t Tier, pairs []Pair, uris map[string]string) ([]Group, error) {
	uf := newUnionFind()
	degree := map[string]int{}
	for _, p := range pairs {
		if p.Tier.AtLeast(t) {
			uf.union(p.A, p.B)
			degree[p.A]++
			degree[p.B]++
		}
	}
	comps := uf.components()
	slices.SortFunc(comps, func(a, b []string) int {
		return cmp.Or(-cmp.Compare(len(a), len(b)), cmp.Compare(uris[minURI(a, uris)], uris[minURI(b, uris)]))
	})
	groups := make([]Group, 0, len(comps))
	for gi, members := range comps {
		rep := members[0]
		for _, m := range members[1:] {
			if degree[m] > degree[rep] || (degree[m] == degree[rep] && uris[m] < uris[rep]) {
				rep = m
			}
		}
		g := Group{ID: fmt.Sprintf("%s-%06d", t, gi+1), Tier: t}
		ms, err := scoreMembers(ctx, cfg, g.ID, rep, members, uris)
		if err != nil {
			return nil, err
		}
		ms[0].Tier = t
		g.Members = ms
		groups = append(groups, g)
	}
	return groups, nil
}

func minURI(ids []string, uris map[string]string) string {
	best := ids[0]
	for _, id := range ids[1:] {
		if uris[id] < uris[best] {
			best = id
		}
	}
	return best
}

// scoreMembers reads the group's vectors (1000 at a time) and scores each
// member against the representative.
func scoreMembers(ctx context.Context, cfg DedupConfig, group, rep string, members []string, uris map[string]string) ([]Member, error) {
	repRows, err := cfg.Collection.GetMany(ctx, []string{rep})
	if err != nil {
		return nil, err
	}
	repRow, ok := repRows[rep]
	if !ok {
		return nil, fmt.Errorf("copies: row %s (%s) vanished while dedup ran", rep, uris[rep])
	}
	out := []Member{{Group: group, ID: rep, URI: repRow.URI, Cosine: 1, Score: 1, Tier: Exact, Representative: true}}
	others := slices.DeleteFunc(slices.Clone(members), func(id string) bool { return id == rep })
	for first := 0; first < len(others); first += 1000 {
		chunk := others[first:min(first+1000, len(others))]
		rows, err := cfg.Collection.GetMany(ctx, chunk)
		if err != nil {
			return nil, err
		}
		var got []vecstore.Row
		for _, id := range chunk {
			if r, ok := rows[id]; ok { // a row deleted meanwhile drops out
				got = append(got, r)
			}
		}
		vecs := make([][]float32, len(got))
		for i, r := range got {
			vecs[i] = r.Vector
		}
		bias, err := cfg.Scorer.Bias(ctx, vecs)
		if err != nil {
			return nil, err
		}
		for i, r := range got {
			cos := dot(r.Vector, repRow.Vector)
			score := cos - bias[i]
			same := r.SHA256 != "" && r.SHA256 == repRow.SHA256
			t := cfg.Thresholds.TierOf(same, cos, score)
			if t == "" {
				t = Linked
			}
			out = append(out, Member{Group: group, ID: r.ID, URI: r.URI, Cosine: cos, Score: score, Tier: t})
		}
	}
	slices.SortStableFunc(out[1:], func(a, b Member) int { return cmp.Or(-cmp.Compare(a.Score, b.Score), cmp.Compare(a.URI, b.URI)) })
	return out, nil
}

func dot(a, b []float32) float64 {
	s := 0.0
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// unionFind over string ids, with path halving and union by size.
type unionFind struct {
	parent map[string]string
	size   map[string]int
}

func newUnionFind() *unionFind {
	return &unionFind{parent: map[string]string{}, size: map[string]int{}}
}

func (u *unionFind) find(x string) string {
	if _, ok := u.parent[x]; !ok {
		u.parent[x], u.size[x] = x, 1
		return x
	}
	for u.parent[x] != x {
		u.parent[x] = u.parent[u.parent[x]]
		x = u.parent[x]
	}
	return x
}

func (u *unionFind) union(a, b string) {
	ra, rb := u.find(a), u.find(b)
	if ra == rb {
		return
	}
	if u.size[ra] < u.size[rb] {
		ra, rb = rb, ra
	}
	u.parent[rb] = ra
	u.size[ra] += u.size[rb]
}

// components are the sets of two or more ids, each sorted.
func (u *unionFind) components() [][]string {
	by := map[string][]string{}
	for x := range u.parent {
		r := u.find(x)
		by[r] = append(by[r], x)
	}
	out := make([][]string, 0, len(by))
	for _, c := range by {
		if len(c) > 1 {
			slices.Sort(c)
			out = append(out, c)
		}
	}
	return out
}
