package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/deploy/bench/copydetect"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/copies"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/vecstore"
	"github.com/embedfleet/embedfleet/worker"
)

func newBenchCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks that run the real pipeline"}
	cmd.AddCommand(newCopyDetectCmd(g))
	return cmd
}

// copyDetectConfig is the flags of the command, and where it writes.
type copyDetectConfig struct {
	g                        *globalFlags
	stdout, stderr           io.Writer
	refs, queries, truthFile string
	background               string
	models, outDir           string
	milvusBin                string
	batch                    int
	cf                       copyFlags
}

func newCopyDetectCmd(g *globalFlags) *cobra.Command {
	cfg := &copyDetectConfig{g: g}
	cmd := &cobra.Command{
		Use:   "copydetect --refs DIR --queries DIR --truth truth.csv --models M[,M...]",
		Short: "Copy-detection accuracy and speed: index references through the pipeline, search every query",
		Long: `Index the reference images through the real pipeline (in-process NATS
JetStream, a milvus-lite server, the coordinator and a worker), embed every
query, search each model's collection, and report per model: accuracy@1 and
top-3 accuracy (the article's metrics), recall@10, and micro average precision
as DISC21 defines it (all query-reference-score predictions pooled and ranked
by score), with images/s for indexing, for queries, and overall, and per stage (time
spent fetching/decoding/preprocessing, embedding, upserting, embedding the
queries and searching).

With --background DIR (unrelated images: neither references nor the sources
of queries), DIR is embedded through the pipeline into each model's background
set too, and every score is also normalised against it (the cosine less --beta
times the mean cosine of the query's --background-n nearest background
images), reporting micro AP and recall at 90% precision raw and normalised. The
thresholds printed for 90, 95 and 99% precision (of normalised scores, with a
background) are what dedup --threshold, query --copies and serve take.

truth.csv has a header and rows "query,reference" (reference empty for a query
with no match), as deploy/bench/make_queries.py writes. Prints one line per
model and, with --out, writes results.json, results.md and results.png
(precision-recall curves and images/s bars) there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runCopyDetect(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.refs, "refs", "", "folder of reference images (required)")
	f.StringVar(&cfg.queries, "queries", "", "folder of query images (required)")
	f.StringVar(&cfg.truthFile, "truth", "", "truth.csv: query,reference (required)")
	f.StringVar(&cfg.models, "models", "clip-vit-b32,dinov2-base", "models, comma-separated")
	f.StringVar(&cfg.background, "background", "", "folder of unrelated images to normalise scores against (see above)")
	f.Float64Var(&cfg.cf.beta, "beta", copies.DefaultRecipe().Beta, "score normalisation: the weight of the background term")
	f.IntVar(&cfg.cf.n, "background-n", copies.DefaultRecipe().N, "score normalisation: how many nearest background images are averaged")
	f.StringVar(&cfg.outDir, "out", "", "write results.json and results.md here")
	f.IntVar(&cfg.batch, "batch-size", 32, "images per inference batch")
	f.StringVar(&cfg.milvusBin, "milvus-bin", envOr("EMBEDFLEET_MILVUS_BIN", defaultMilvusBin()), "milvus-lite server binary (env EMBEDFLEET_MILVUS_BIN)")
	return cmd
}

func runCopyDetect(ctx context.Context, cfg *copyDetectConfig) error {
	g := cfg.g
	ms := splitList(cfg.models)
	if cfg.refs == "" || cfg.queries == "" || cfg.truthFile == "" || len(ms) == 0 {
		return errors.New("--refs, --queries, --truth and --models are required")
	}
	truth, err := copydetect.ReadTruth(cfg.truthFile)
	if err != nil {
		return err
	}
	dataDir, err := os.MkdirTemp("", "embedfleet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	opened, err := openModels(g, ms)
	if err != nil {
		return err
	}
	defer opened.close()
	if err := opened.imagesOnly("bench copy-detection"); err != nil {
		return err
	}
	st, err := startEmbedded(ctx, stack.Config{DataDir: dataDir, MilvusBin: cfg.milvusBin})
	if err != nil {
		return err
	}
	defer st.close()
	src, err := objstore.Open(cfg.refs, objstore.S3Config{}, objstore.Filter{})
	if err != nil {
		return err
	}
	var bgSrc objstore.Source
	if cfg.background != "" {
		if bgSrc, err = objstore.Open(cfg.background, objstore.S3Config{}, objstore.Filter{}); err != nil {
			return fmt.Errorf("--background: %w", err)
		}
	}
	recipe, err := cfg.cf.recipe()
	if err != nil {
		return err
	}
	var results []copydetect.Result
	var curves []copydetect.Curve
	for _, e := range opened.images {
		r, preds, err := copyDetect(ctx, st, src, bgSrc, recipe, e, cfg.queries, truth, cfg.batch, g, cfg.stderr)
		if err != nil {
			return err
		}
		rec, prec := copydetect.PRCurve(truth, preds)
		curves = append(curves, copydetect.Curve{Recall: rec, Precision: prec})
		fmt.Fprintf(cfg.stdout, "embedfleet %s top1=%.4f top3=%.4f recall10=%.4f micro_ap=%.4f img_s=%.2f index_img_s=%.2f query_img_s=%.2f refs=%d queries=%d\n",
			r.Model, r.Top1, r.Top3, r.Recall10, r.MicroAP, r.ImgPerSec, r.IndexImgS, r.QueryImgS, r.Refs, r.Queries)
		if r.MicroAPNorm != nil {
			fmt.Fprintf(cfg.stdout, "normalised %s background=%d micro_ap_raw=%.4f micro_ap_norm=%.4f recall_p90_raw=%.4f recall_p90_norm=%.4f top1=%.4f\n",
				r.Model, r.Background, r.MicroAP, *r.MicroAPNorm, r.RecallP90, *r.RecallP90Norm, *r.Top1Norm)
		}
		kind := "raw"
		if r.MicroAPNorm != nil {
			kind = "normalised"
		}
		fmt.Fprintf(cfg.stdout, "thresholds %s %s p90=%s p95=%s p99=%s\n", r.Model, kind,
			thresholdText(r.Thresholds, "p90"), thresholdText(r.Thresholds, "p95"), thresholdText(r.Thresholds, "p99"))
		fmt.Fprintf(cfg.stdout, "stages %s prepare_img_s=%.1f embed_img_s=%.1f upsert_img_s=%.1f query_embed_img_s=%.1f search_img_s=%.1f\n",
			r.Model, r.Stages["prepare"], r.Stages["embed"], r.Stages["upsert"], r.Stages["query_embed"], r.Stages["search"])
		results = append(results, r)
	}
	if cfg.outDir != "" {
		if err := copydetect.WriteResults(cfg.outDir, results); err != nil {
			return err
		}
		return copydetect.WriteChart(filepath.Join(cfg.outDir, "results.png"), results, curves)
	}
	return nil
}

func thresholdText(m map[string]float64, k string) string {
	if v, ok := m[k]; ok {
		return fmt.Sprintf("%.4f", v)
	}
	return "none"
}

func copyDetect(ctx context.Context, st *embedded, src, bgSrc objstore.Source, recipe copies.Recipe, e engine.ImageEncoder, queryDir string, truth map[string]string, batch int, g *globalFlags, progress io.Writer) (copydetect.Result, map[string][]copydetect.Scored, error) {
	name := e.Spec().Name
	res := copydetect.Result{Pipeline: "embedfleet", Model: name}
	cons, err := st.topo.WorkerConsumer(ctx, st.js, bus.ConsumerOptions{})
	if err != nil {
		return res, nil, err
	}
	reg := prometheus.NewRegistry()
	w, err := worker.New(ctx, worker.Config{JS: st.js, Topology: st.topo, Consumer: cons, Models: []engine.ImageEncoder{e},
		Store: st.store, OpenSource: func(uri string) (objstore.Source, error) {
			return objstore.Open(uri, objstore.S3Config{}, objstore.Filter{})
		},
		BatchSize: batch, Prefetch: 2, Metrics: worker.NewMetrics(reg), DecoderOptions: g.decoderOptions(), FastDecode: g.fastDecode()})
	if err != nil {
		return res, nil, err
	}
	start := time.Now()
	lastNote := time.Now()
	var sum coordinator.Summary
	// Index while the worker runs; a worker that fails ends the indexing
	// with its error.
	err = supervise(ctx, func(ctx context.Context) error {
		coord := coordinator.New(st.js, st.topo)
		if bgSrc != nil {
			// The background set first: the same worker, its own collection.
			rec, err := coord.Run(ctx, coordinator.Config{Source: bgSrc, Models: []string{vecstore.Target(name, vecstore.SetBackground)}, JobSize: 2 * batch})
			if err != nil {
				return err
			}
			bs, err := coord.Wait(ctx, rec, nil)
			if err != nil {
				return fmt.Errorf("background: %w", err)
			}
			res.Background = int(bs.Stored)
			fmt.Fprintf(progress, "bench %s: %d background images embedded\n", name, bs.Stored)
		}
		rec, err := coord.Run(ctx, coordinator.Config{Source: src, Models: []string{name}, JobSize: 2 * batch})
		if err != nil {
			return err
		}
		sum, err = coord.Wait(ctx, rec, func(s coordinator.Summary) {
			if time.Since(lastNote) >= 5*time.Second {
				lastNote = time.Now()
				fmt.Fprintf(progress, "bench %s: indexed %d/%d references, %.1f img/s\n", name, s.Stored, rec.Listed, float64(s.Stored)/s.Elapsed.Seconds())
			}
		})
		return err
	}, component{name: "worker", run: w.Run})
	if err != nil {
		return res, nil, err
	}
	indexTime := time.Since(start) // with the background set's, when there is one
	res.Refs = int(sum.Stored)
	res.IndexImgS = float64(sum.Stored) / indexTime.Seconds()
	res.Stages = map[string]float64{}
	for stage, secs := range stageSeconds(reg) {
		if secs > 0 {
			res.Stages[stage] = float64(sum.Stored) / secs
		}
	}

	qs := make([]string, 0, len(truth))
	for q := range truth {
		qs = append(qs, q)
	}
	sort.Strings(qs)
	eng, err := engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: batch}, Limits: imageprepLimits(), DecoderOptions: g.decoderOptions(), FastDecode: g.fastDecode()},
		[]engine.ImageEncoder{e}, nil)
	if err != nil {
		return res, nil, err
	}
	defer eng.Close()
	s := search.New(st.store, eng)
	var scorer copies.Scorer
	if bgSrc != nil {
		_, bg, err := copies.OpenPair(ctx, st.store, name)
		if err != nil {
			return res, nil, err
		}
		if bg == nil {
			return res, nil, fmt.Errorf("--background %s: no image of it was embedded", bgSrc.URI())
		}
		scorer = copies.Scorer{Background: bg, Recipe: recipe}
	}
	results := map[string][]copydetect.Scored{}
	normalised := map[string][]copydetect.Scored{}
	var queryEmbed, searchTime time.Duration
	start = time.Now()
	qStart := start
	// Queries are embedded as the worker embeds: decoded on every core,
	// inferred in batches (the engine's); then each chunk is searched.
	for first := 0; first < len(qs); first += 4 * batch {
		chunk := qs[first:min(first+4*batch, len(qs))]
		vecs := make([][]float32, len(chunk))
		t0 := time.Now()
		err := eng.EmbedImages(ctx, name, len(chunk), func(i int) ([]byte, error) {
			return readFileLimited(filepath.Join(queryDir, chunk[i]))
		}, func(i int, v []float32, err error) error {
			if err != nil {
				return fmt.Errorf("query %s: %w", chunk[i], err)
			}
			vecs[i] = v
			return nil
		})
		queryEmbed += time.Since(t0)
		if err != nil {
			return res, nil, err
		}
		t0 = time.Now()
		hits, err := s.ByVectors(ctx, name, vecs, 10)
		if err != nil {
			return res, nil, fmt.Errorf("queries %s..%s: %w", chunk[0], chunk[len(chunk)-1], err)
		}
		bias, err := scorer.Bias(ctx, vecs) // zeros without a background
		searchTime += time.Since(t0)
		if err != nil {
			return res, nil, fmt.Errorf("queries %s..%s: %w", chunk[0], chunk[len(chunk)-1], err)
		}
		for i, q := range chunk {
			for _, h := range hits[i] {
				ref := path.Base(filepath.ToSlash(h.URI))
				results[q] = append(results[q], copydetect.Scored{Ref: ref, Score: h.Cosine})
				normalised[q] = append(normalised[q], copydetect.Scored{Ref: ref, Score: h.Cosine - bias[i]})
			}
		}
		if time.Since(lastNote) >= 5*time.Second {
			lastNote = time.Now()
			done := first + len(chunk)
			fmt.Fprintf(progress, "bench %s: searched %d/%d queries, %.1f img/s\n", name, done, len(qs), float64(done)/time.Since(qStart).Seconds())
		}
	}
	queryTime := time.Since(start)
	res.Queries = len(qs)
	res.QueryImgS = float64(len(qs)) / queryTime.Seconds()
	if queryEmbed > 0 {
		res.Stages["query_embed"] = float64(len(qs)) / queryEmbed.Seconds()
	}
	if searchTime > 0 {
		res.Stages["search"] = float64(len(qs)) / searchTime.Seconds()
	}
	res.ImgPerSec = float64(res.Refs+res.Queries) / (indexTime + queryTime).Seconds()
	res.Top1, res.Top3, res.Recall10, res.MicroAP = copydetect.Metrics(truth, results)
	res.RecallP90, _, _ = copydetect.AtPrecision(truth, results, 0.9)
	res.Thresholds = copydetect.Thresholds(truth, results)
	if scorer.Normalised() {
		top1, _, _, ap := copydetect.Metrics(truth, normalised)
		rp90, _, _ := copydetect.AtPrecision(truth, normalised, 0.9)
		res.MicroAPNorm, res.RecallP90Norm, res.Top1Norm = &ap, &rp90, &top1
		res.Thresholds = copydetect.Thresholds(truth, normalised)
	}
	return res, results, nil
}

// stageSeconds sums the worker's time per stage (prepare, embed, upsert)
// from its metrics.
func stageSeconds(reg *prometheus.Registry) map[string]float64 {
	out := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "embedfleet_worker_stage_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" {
					out[l.GetValue()] += m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return out
}
