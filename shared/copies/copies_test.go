package copies_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/copies"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

const dim = 64

func randUnit(r *rand.Rand) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	embed.Normalize(v)
	return v
}

// near is v moved by noise of norm s (cosine about 1/sqrt(1+s^2)).
func near(r *rand.Rand, v []float32, s float64) []float32 {
	n := randUnit(r)
	out := make([]float32, dim)
	for i := range v {
		out[i] = v[i] + float32(s)*n[i]
	}
	embed.Normalize(out)
	return out
}

func spec(name string) embed.Spec {
	s, _ := embed.Builtin("clip-vit-b32")
	s.Name, s.Version, s.Dim = name, "sha256:test", dim
	return s
}

type planted struct {
	rows  []vecstore.Row
	group map[string]string // uri -> planted group name
}

func (p *planted) add(uri string, v []float32, sha, group string) {
	p.rows = append(p.rows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, ETag: "e", Vector: v, SHA256: sha})
	if group != "" {
		p.group[uri] = group
	}
}

// collections makes a collection of 300 unrelated vectors with planted
// duplicates, and a background set: a cluster of 12 vectors around one
// direction ("plain skies") and 40 unrelated ones.
func collections(t *testing.T, ctx context.Context, st *vecstore.Store, model string) (*planted, []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	p := &planted{group: map[string]string{}}
	for i := range 300 {
		p.add(fmt.Sprintf("s3://b/photos/%03d.jpg", i), randUnit(r), fmt.Sprintf("%064x", i+1), "")
	}
	// Three uploads of the same bytes.
	v := randUnit(r)
	for i := range 3 {
		p.add(fmt.Sprintf("s3://b/photos/same-%d.jpg", i), v, strings.Repeat("ab", 32), "exact")
	}
	// An original and three edited copies.
	orig := randUnit(r)
	p.add("s3://b/photos/orig.jpg", orig, strings.Repeat("01", 32), "copy")
	for i := range 3 {
		p.add(fmt.Sprintf("s3://b/photos/orig-edit%d.jpg", i), near(r, orig, 0.12), fmt.Sprintf("%064x", 1000+i), "copy")
	}
	// Two merely similar photos.
	sim := randUnit(r)
	p.add("s3://b/photos/sim-a.jpg", sim, fmt.Sprintf("%064x", 2000), "similar")
	p.add("s3://b/photos/sim-b.jpg", near(r, sim, 0.9), fmt.Sprintf("%064x", 2001), "similar")
	// Four plain skies: close to each other and to the background's skies,
	// so their raw cosines look like copies and their normalised scores do
	// not.
	sky := randUnit(r)
	for i := range 4 {
		p.add(fmt.Sprintf("s3://b/photos/sky%d.jpg", i), near(r, sky, 0.3), fmt.Sprintf("%064x", 3000+i), "")
	}
	col, err := st.Ensure(ctx, spec(model))
	if err != nil {
		t.Fatal(err)
	}
	if err := col.Upsert(ctx, p.rows); err != nil {
		t.Fatal(err)
	}
	bg, err := st.Ensure(ctx, spec(vecstore.Target(model, vecstore.SetBackground)))
	if err != nil {
		t.Fatal(err)
	}
	var bgRows []vecstore.Row
	for i := range 52 {
		v := randUnit(r)
		if i < 12 {
			v = near(r, sky, 0.3)
		}
		uri := fmt.Sprintf("s3://b/background/%02d.jpg", i)
		bgRows = append(bgRows, vecstore.Row{ID: vecstore.ID(uri), URI: uri, Vector: v})
	}
	if err := bg.Upsert(ctx, bgRows); err != nil {
		t.Fatal(err)
	}
	return p, sky
}

func TestDedupAndCheck(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: mv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	model := testenv.Name(t, "m")
	p, sky := collections(t, ctx, st, model)
	col, bg, err := copies.OpenPair(ctx, st, model)
	if err != nil || bg == nil {
		t.Fatalf("open pair: %v (background %v)", err, bg)
	}

	groupsOf := func(res *copies.Result, tier copies.Tier) [][]string {
		var out [][]string
		for _, g := range res.Groups {
			if g.Tier != tier {
				continue
			}
			var us []string
			for _, m := range g.Members {
				us = append(us, m.URI[len("s3://b/photos/"):])
			}
			slices.Sort(us)
			out = append(out, us)
		}
		return out
	}
	var progress []copies.Progress
	th := copies.Thresholds{Copy: 0.55, Similar: 0.7}
	res, err := copies.Dedup(ctx, copies.DedupConfig{Collection: col, Scorer: copies.Scorer{Background: bg, Recipe: copies.DefaultRecipe()},
		Thresholds: th, K: 5, Batch: 64, Progress: func(pr copies.Progress) { progress = append(progress, pr) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Scanned != int64(len(p.rows)) || !res.HasHashes || !res.Normalised {
		t.Fatalf("result %+v: want %d scanned, with hashes, normalised", res, len(p.rows))
	}
	if len(progress) != (len(p.rows)+63)/64 || progress[len(progress)-1].Scanned != int64(len(p.rows)) || progress[0].Total != int64(len(p.rows)) {
		t.Fatalf("progress: %+v", progress)
	}
	want := map[copies.Tier][][]string{
		copies.Exact: {{"same-0.jpg", "same-1.jpg", "same-2.jpg"}},
		copies.Copy:  {{"orig-edit0.jpg", "orig-edit1.jpg", "orig-edit2.jpg", "orig.jpg"}, {"same-0.jpg", "same-1.jpg", "same-2.jpg"}},
		// The skies are similar by plain cosine, and are that tier.
		copies.Similar: {{"orig-edit0.jpg", "orig-edit1.jpg", "orig-edit2.jpg", "orig.jpg"}, {"same-0.jpg", "same-1.jpg", "same-2.jpg"}, {"sim-a.jpg", "sim-b.jpg"},
			{"sky0.jpg", "sky1.jpg", "sky2.jpg", "sky3.jpg"}},
	}
	for tier, w := range want {
		got := groupsOf(res, tier)
		slices.SortFunc(got, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s groups: %v, want %v", tier, got, w)
		}
	}
	if res.Pairs[copies.Exact] != 3 || res.Pairs[copies.Copy] != 6 || res.Pairs[copies.Similar] != 7 {
		t.Errorf("pairs by tier: %v, want exact 3, copy 6, similar 7 (the two similar photos and the 4 skies' 6 pairs)", res.Pairs)
	}
	for _, g := range res.Groups {
		if !g.Members[0].Representative || g.Members[0].Tier != g.Tier {
			t.Errorf("group %s does not start with its representative: %+v", g.ID, g.Members[0])
		}
		for _, m := range g.Members[1:] {
			if m.Representative || m.Tier == "" || m.Cosine > 1.0001 {
				t.Errorf("group %s member %+v", g.ID, m)
			}
			if g.Tier == copies.Exact && m.Tier != copies.Exact {
				t.Errorf("exact group %s has member %+v", g.ID, m)
			}
		}
	}

	// Raw cosines without a background: the skies (cosine about 0.9 to
	// one another) become "copies" at a raw threshold that keeps the
	// edited copies; normalising is what tells them apart.
	raw, err := copies.Dedup(ctx, copies.DedupConfig{Collection: col, Thresholds: copies.Thresholds{Copy: 0.88}, K: 5})
	if err != nil {
		t.Fatal(err)
	}
	gotRaw := groupsOf(raw, copies.Copy)
	if !slices.ContainsFunc(gotRaw, func(g []string) bool { return slices.Contains(g, "sky0.jpg") }) {
		t.Errorf("raw copy groups %v: the skies were expected among them at cosine 0.88", gotRaw)
	}
	if slices.ContainsFunc(groupsOf(res, copies.Copy), func(g []string) bool { return slices.Contains(g, "sky0.jpg") }) {
		t.Error("normalised copy groups hold a sky")
	}

	// Under a prefix only those rows are scanned and matched.
	under, err := copies.Dedup(ctx, copies.DedupConfig{Collection: col, Scorer: copies.Scorer{Background: bg, Recipe: copies.DefaultRecipe()},
		Thresholds: th, Prefix: "s3://b/photos/orig", K: 5})
	if err != nil || under.Scanned != 4 || len(groupsOf(under, copies.Copy)) != 1 || len(groupsOf(under, copies.Exact)) != 0 {
		t.Fatalf("under prefix: %+v %v", under, err)
	}

	// Check: one request, the query's own row left out, exact first.
	ck := &copies.Checker{Store: st, Recipe: copies.DefaultRecipe(), Thresholds: th}
	same := p.rows[300]
	edit := p.rows[304]
	ans, normalised, err := ck.Check(ctx, model, []copies.Query{
		{Vector: same.Vector, SHA256: same.SHA256, Self: same.ID},
		{Vector: edit.Vector, SHA256: edit.SHA256},
		{Vector: near(rand.New(rand.NewPCG(1, 1)), sky, 0.3)},
	}, 3)
	if err != nil || !normalised || len(ans) != 3 {
		t.Fatalf("check: %v normalised=%v", err, normalised)
	}
	if a := ans[0]; len(a) != 3 || a[0].Tier != copies.Exact || a[1].Tier != copies.Exact || !a[0].IsCopy || a[0].ID == same.ID || a[2].IsCopy {
		t.Errorf("a stored duplicate's matches: %+v", a)
	}
	if a := ans[1]; a[0].ID != edit.ID || a[0].Tier != copies.Exact || !a[1].IsCopy || a[1].Tier != copies.Copy ||
		math.Abs(a[1].Score-a[1].Cosine) < 0.05 {
		t.Errorf("an edited copy's matches: %+v", a)
	}
	if a := ans[2]; a[0].IsCopy || a[0].Cosine < 0.8 {
		t.Errorf("a new sky's matches (close by cosine, normalised below the copy threshold): %+v", a)
	}

	// Reports.
	var buf bytes.Buffer
	if err := copies.WriteCSV(&buf, res.Groups); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	members := 0
	for _, g := range res.Groups {
		members += len(g.Members)
	}
	if err != nil || len(recs) != members+1 || recs[0][0] != "group" {
		t.Fatalf("csv: %d records for %d members (%v)", len(recs), members, err)
	}
	buf.Reset()
	if err := copies.WriteJSONL(&buf, res.Groups); err != nil || strings.Count(buf.String(), "\n") != members {
		t.Fatalf("jsonl: %v", err)
	}
	buf.Reset()
	thumb := func(_ context.Context, uri string) ([]byte, error) {
		if strings.Contains(uri, "edit1") {
			return nil, fmt.Errorf("gone <script>")
		}
		return []byte{0xff, 0xd8, 0xff}, nil
	}
	info := copies.ReportInfo{Model: model, Collection: col.Name, Scanned: res.Scanned, Pairs: res.Pairs, Normalised: true, HasHashes: true, Thresholds: th, Recipe: copies.DefaultRecipe(), K: 5}
	if err := copies.WriteHTML(ctx, &buf, info, res.Groups, 1, 2, thumb); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, w := range []string{"exact groups", "copy groups", "data:image/jpeg;base64,/9j/", "more copy groups", "and 2 more", "gone &lt;script&gt;"} {
		if !strings.Contains(page, w) {
			t.Errorf("report lacks %q", w)
		}
	}
}

func TestTiers(t *testing.T) {
	th := copies.Thresholds{Copy: 0.3, Similar: 0.7}
	for _, c := range []struct {
		same        bool
		cos, score  float64
		want        copies.Tier
		wantCopyish bool
	}{
		{true, 0.2, 0.1, copies.Exact, true},
		{false, 0.9, 0.3, copies.Copy, true},
		{false, 0.9, 0.29, copies.Similar, false},
		{false, 0.69, 0.29, "", false},
	} {
		got := th.TierOf(c.same, c.cos, c.score)
		if got != c.want || got.AtLeast(copies.Copy) != c.wantCopyish {
			t.Errorf("TierOf(%v, %v, %v) = %q, want %q", c.same, c.cos, c.score, got, c.want)
		}
	}
	if (copies.Thresholds{Copy: 0.5}).TierOf(false, 0.99, 0.1) != "" {
		t.Error("the similar tier answered while off")
	}
	if copies.Linked.AtLeast(copies.Similar) || copies.Tier("").AtLeast(copies.Similar) {
		t.Error("linked or no tier counted as a tier")
	}
	for _, bad := range []copies.Thresholds{{Copy: 3}, {Similar: -0.1}, {Similar: 1.5}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	for _, bad := range []copies.Recipe{{Beta: 1, N: 0}, {Beta: -1, N: 3}, {Beta: 1, N: 1000}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := copies.ParseTier("copies"); err == nil {
		t.Error("tier copies accepted")
	}
}
