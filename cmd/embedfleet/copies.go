package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/embedfleet/embedfleet/shared/copies"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// copyFlags bind how copies are scored; query --copies, serve and dedup
// share them.
type copyFlags struct {
	threshold float64 // NaN: the default for normalised or raw scores
	similar   float64
	beta      float64
	n         int
}

func (c *copyFlags) bind(f *pflag.FlagSet) {
	f.Float64Var(&c.threshold, "threshold", math.NaN(), fmt.Sprintf(
		"copy threshold on the normalised score (on the raw cosine where a model has no background set); calibrate it with `bench copydetect --background` (default %g normalised, %g raw)",
		copies.DefaultNormalisedThreshold, copies.DefaultRawThreshold))
	f.Float64Var(&c.similar, "similar", 0, "plain-cosine threshold of the similar tier (0: off)")
	f.Float64Var(&c.beta, "beta", copies.DefaultRecipe().Beta, "score normalisation: the weight of the background term")
	f.IntVar(&c.n, "background-n", copies.DefaultRecipe().N, "score normalisation: how many nearest background images are averaged")
}

// thresholds are those of normalised scores and of raw ones.
func (c *copyFlags) thresholds() (norm, raw copies.Thresholds, err error) {
	norm = copies.Thresholds{Copy: copies.DefaultNormalisedThreshold, Similar: c.similar}
	raw = copies.Thresholds{Copy: copies.DefaultRawThreshold, Similar: c.similar}
	if !math.IsNaN(c.threshold) {
		norm.Copy, raw.Copy = c.threshold, c.threshold
	}
	if err := norm.Validate(); err != nil {
		return norm, raw, fmt.Errorf("--threshold/--similar: %w", err)
	}
	return norm, raw, nil
}

func (c *copyFlags) recipe() (copies.Recipe, error) {
	r := copies.Recipe{Beta: c.beta, N: c.n}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("--beta/--background-n: %w", err)
	}
	return r, nil
}

func (c *copyFlags) checker(store *vecstore.Store) (*copies.Checker, error) {
	norm, raw, err := c.thresholds()
	if err != nil {
		return nil, err
	}
	r, err := c.recipe()
	if err != nil {
		return nil, err
	}
	return &copies.Checker{Store: store, Recipe: r, Thresholds: norm, RawThresholds: &raw}, nil
}

// dedupConfig is the flags of the command, and where it writes.
type dedupConfig struct {
	g               *globalFlags
	stdout, stderr  io.Writer
	mf              milvusFlags
	nf              natsFlags
	s3              s3Flags
	cf              copyFlags
	model, source   string
	background, out string
	raw             bool
	k, batch        int
	maxGroups       int
	maxMembers      int
	thumbs          bool
	backgroundWait  time.Duration
}

func newDedupCmd(g *globalFlags) *cobra.Command {
	cfg := &dedupConfig{g: g}
	cmd := &cobra.Command{
		Use:   "dedup --model MODEL [--source s3://bucket/prefix|DIR] [--background s3://...|DIR] [--threshold T] [--k 10] --out DIR",
		Short: "Find the copies and duplicates inside a collection, in groups, with a report",
		Long: `Read every vector of the model's collection (under --source's prefix, if
given) with a query iterator, search each one's --k nearest in bulk (--batch
vectors per Milvus request), keep the pairs that reach a tier, and join them
into groups. Three tiers, grouped and reported separately:

  exact    the same bytes (the workers store each object's sha256; a collection
           made before they did has none, and the report says so)
  copy     a normalised score at or above --threshold: the cosine less --beta
           times the mean cosine of the image's --background-n nearest
           background images (SSCD's score normalisation, beta 1 over the 3
           nearest by default). Without a background set the score is the raw
           cosine, which means less: a plain sky is close to every sky.
  similar  a plain cosine at or above --similar (off unless given)

Copy groups hold the exact pairs too, similar groups all three. Each group's
representative is the member with the most pairs; every member is scored
against it ("linked": joined through another member, below the thresholds
against the representative).

The background set is the model's collection MODEL@background: unrelated images
(not copies of anything indexed) embedded by the same model. --background SRC
embeds SRC into it first through the normal pipeline (a run on NATS that the
workers serve, incremental, so a second dedup re-embeds nothing), as
"coordinator run --set background --incremental" does; an existing background
set is used without it. --raw ignores it.

Writes to --out: groups.csv and groups.jsonl (group, tier, id, uri, score and
cosine to the representative), report.html (thumbnails read with the --s3-*
settings; --max-groups per tier, --max-members per group) and summary.json.
Progress goes to stderr. Memory grows with the pairs found, not with the
collection; the cost is one k-NN search per vector. Re-running is the resume:
nothing is written to the collection.

Calibrate --threshold with "embedfleet bench copydetect --background DIR",
which prints the thresholds for 90, 95 and 99% precision on your images.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runDedup(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	cfg.mf.bind(f)
	cfg.nf.bind(f)
	cfg.s3.bindConn(f)
	cfg.cf.bind(f)
	f.StringVar(&cfg.model, "model", "", "model whose collection to scan (required)")
	f.StringVar(&cfg.source, "source", "", "only the rows of objects under this s3://bucket/prefix or folder (default: the whole collection)")
	f.StringVar(&cfg.background, "background", "", "embed this s3://bucket/prefix or folder of unrelated images as the model's background set first (needs running workers)")
	f.BoolVar(&cfg.raw, "raw", false, "score by raw cosine even where the model has a background set")
	f.StringVar(&cfg.out, "out", "", "folder for groups.csv, groups.jsonl, report.html and summary.json (required)")
	f.IntVar(&cfg.k, "k", 10, "nearest neighbours looked at per vector")
	f.IntVar(&cfg.batch, "batch", 256, "vectors per search request")
	f.IntVar(&cfg.maxGroups, "max-groups", 200, "groups per tier shown in report.html (0: all; the CSV has every group)")
	f.IntVar(&cfg.maxMembers, "max-members", 24, "members per group shown in report.html (0: all)")
	f.BoolVar(&cfg.thumbs, "thumbnails", true, "read the objects for report.html's thumbnails")
	f.DurationVar(&cfg.backgroundWait, "background-timeout", 0, "with --background: give up embedding it after this long (0: never)")
	return cmd
}

func runDedup(ctx context.Context, cfg *dedupConfig) error {
	if cfg.model == "" || cfg.out == "" {
		return errors.New("--model and --out are required")
	}
	if cfg.k < 1 || cfg.k > 1000 {
		return fmt.Errorf("--k must be 1 to 1000, got %d", cfg.k)
	}
	if cfg.batch < 1 || cfg.batch > 4096 {
		return fmt.Errorf("--batch must be 1 to 4096, got %d", cfg.batch)
	}
	if cfg.raw && cfg.background != "" {
		return errors.New("--raw and --background contradict each other")
	}
	norm, raw, err := cfg.cf.thresholds()
	if err != nil {
		return err
	}
	recipe, err := cfg.cf.recipe()
	if err != nil {
		return err
	}
	spec, err := resolveSpec(cfg.g, cfg.model)
	if err != nil {
		return err
	}
	model := spec.Name
	prefix := ""
	if cfg.source != "" {
		src, err := cfg.s3.open(cfg.source)
		if err != nil {
			return fmt.Errorf("--source: %w", err)
		}
		prefix = src.RowPrefix()
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	store, err := vecstore.Connect(ctx, cfg.mf.cfg)
	if err != nil {
		return err
	}
	defer store.Close(context.Background())
	if cfg.background != "" {
		if err := embedBackground(ctx, cfg, model); err != nil {
			return fmt.Errorf("--background: %w", err)
		}
	}
	col, bg, err := copies.OpenPair(ctx, store, model)
	if err != nil {
		return err
	}
	if cfg.raw {
		bg = nil
	}
	th := norm
	if bg == nil {
		th = raw
		fmt.Fprintf(cfg.stderr, "dedup %s: no background set (%s): scores are raw cosines, copy at cosine >= %g\n",
			model, vecstore.CollectionName(vecstore.Target(model, vecstore.SetBackground)), th.Copy)
	}
	if !col.HasSHA256 {
		fmt.Fprintf(cfg.stderr, "dedup %s: collection %s predates content hashes: no exact tier until it is made again\n", model, col.Name)
	}
	last := time.Now()
	res, err := copies.Dedup(ctx, copies.DedupConfig{Collection: col, Scorer: copies.Scorer{Background: bg, Recipe: recipe},
		Thresholds: th, Prefix: prefix, K: cfg.k, Batch: cfg.batch, Progress: func(p copies.Progress) {
			if time.Since(last) >= 5*time.Second || p.Scanned >= p.Total {
				last = time.Now()
				fmt.Fprintf(cfg.stderr, "dedup %s: %d/%d vectors, %d pairs, %.0f vectors/s\n", model, p.Scanned, p.Total, p.Pairs, float64(p.Scanned)/p.Elapsed.Seconds())
			}
		}})
	if err != nil {
		return err
	}
	if err := writeDedup(ctx, cfg, model, col, res, th, recipe); err != nil {
		return err
	}
	count := map[copies.Tier]int{}
	members := map[copies.Tier]int{}
	for _, g := range res.Groups {
		count[g.Tier]++
		members[g.Tier] += len(g.Members)
	}
	fmt.Fprintf(cfg.stdout, "dedup %s vectors=%d normalised=%v pairs_exact=%d pairs_copy=%d pairs_similar=%d groups_exact=%d groups_copy=%d groups_similar=%d in_copy_groups=%d wall_s=%.1f vectors_s=%.0f out=%s\n",
		model, res.Scanned, res.Normalised, res.Pairs[copies.Exact], res.Pairs[copies.Copy], res.Pairs[copies.Similar],
		count[copies.Exact], count[copies.Copy], count[copies.Similar], members[copies.Copy], res.Took.Seconds(),
		float64(res.Scanned)/res.Took.Seconds(), cfg.out)
	return nil
}

// embedBackground embeds cfg.background into model's background set: an
// incremental run of the coordinator, followed to its end.
func embedBackground(ctx context.Context, cfg *dedupConfig, model string) error {
	rc := &coordinatorRunConfig{g: cfg.g, stdout: cfg.stderr, stderr: cfg.stderr, nf: cfg.nf, mf: cfg.mf, sf: cfg.s3,
		source: cfg.background, models: model, set: vecstore.SetBackground, jobSize: 64, incremental: true,
		maxFailed: 1, timeout: cfg.backgroundWait, logLevel: "warn"}
	fmt.Fprintf(cfg.stderr, "dedup %s: embedding %s as its background set (the workers do it)\n", model, cfg.background)
	return runCoordinatorCmd(ctx, rc)
}

func writeDedup(ctx context.Context, cfg *dedupConfig, model string, col *vecstore.Collection, res *copies.Result, th copies.Thresholds, recipe copies.Recipe) error {
	write := func(name string, fn func(w io.Writer) error) error {
		p := filepath.Join(cfg.out, name)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		bw := bufio.NewWriter(f)
		if err := fn(bw); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := bw.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if err := write("groups.csv", func(w io.Writer) error { return copies.WriteCSV(w, res.Groups) }); err != nil {
		return err
	}
	if err := write("groups.jsonl", func(w io.Writer) error { return copies.WriteJSONL(w, res.Groups) }); err != nil {
		return err
	}
	var thumb func(context.Context, string) ([]byte, error)
	if cfg.thumbs {
		objs := objstore.NewObjects(cfg.s3.cfg)
		lim := imageprepLimits()
		thumb = func(ctx context.Context, uri string) ([]byte, error) {
			data, err := objs.Get(ctx, uri, lim.MaxBytes)
			if err != nil {
				return nil, err
			}
			return imageprep.Thumbnail(data, 160, lim, cfg.g.decoderOptions()...)
		}
	}
	info := copies.ReportInfo{Model: model, Collection: col.Name, Scanned: res.Scanned, Pairs: res.Pairs, Normalised: res.Normalised,
		HasHashes: res.HasHashes, Thresholds: th, Recipe: recipe, K: cfg.k}
	if err := write("report.html", func(w io.Writer) error {
		return copies.WriteHTML(ctx, w, info, res.Groups, cfg.maxGroups, cfg.maxMembers, thumb)
	}); err != nil {
		return err
	}
	return write("summary.json", func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return enc.Encode(map[string]any{"model": model, "collection": col.Name, "vectors": res.Scanned, "pairs": res.Pairs,
			"groups": len(res.Groups), "normalised": res.Normalised, "has_hashes": res.HasHashes, "thresholds": th,
			"recipe": recipe, "k": cfg.k, "wall_s": res.Took.Seconds()})
	})
}

// queryCopies answers query --copies: the query's candidate copies with
// raw and normalised scores and a verdict.
func queryCopies(ctx context.Context, cfg *queryConfig, store *vecstore.Store, embedImage func([]byte) ([]float32, error), model string) error {
	ck, err := cfg.cf.checker(store)
	if err != nil {
		return err
	}
	var q copies.Query
	switch {
	case cfg.img != "":
		data, err := readFileLimited(cfg.img)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		q.SHA256 = hex.EncodeToString(sum[:])
		if q.Vector, err = embedImage(data); err != nil {
			return fmt.Errorf("query image: %w", err)
		}
	default:
		col, _, err := ck.Collections(ctx, model)
		if err != nil {
			return err
		}
		id := cfg.id
		if cfg.uri != "" {
			id = vecstore.ID(cfg.uri)
		}
		row, found, err := col.Get(ctx, id)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%s is not indexed in %s", firstNonEmpty(cfg.uri, cfg.id), col.Name)
		}
		q = copies.Query{Vector: row.Vector, SHA256: row.SHA256, Self: row.ID}
	}
	ans, normalised, err := ck.Check(ctx, model, []copies.Query{q}, cfg.topK)
	if err != nil {
		return err
	}
	if cfg.asJSON {
		enc := json.NewEncoder(cfg.stdout)
		enc.SetIndent("", " ")
		return enc.Encode(map[string]any{"model": model, "normalised": normalised, "matches": ans[0]})
	}
	if !normalised {
		fmt.Fprintf(cfg.stderr, "query: %s has no background set: scores are raw cosines\n", model)
	}
	fmt.Fprintf(cfg.stdout, "%-4s %-9s %-9s %-8s %-5s %s\n", "RANK", "COSINE", "SCORE", "TIER", "COPY", "URI")
	for i, m := range ans[0] {
		tier := string(m.Tier)
		if tier == "" {
			tier = "-"
		}
		fmt.Fprintf(cfg.stdout, "%-4d %-9.6f %-9.6f %-8s %-5v %s\n", i+1, m.Cosine, m.Score, tier, m.IsCopy, escape.Terminal(m.URI))
	}
	return nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
