package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/telemetry"
	"github.com/embedfleet/embedfleet/shared/vecstore"
	"github.com/embedfleet/embedfleet/worker"
)

// Exit codes for scheduled runs (documented in docs/operations.md).
const (
	exitFailures  = 2 // the run finished with more failures than allowed
	exitLeaseHeld = 3 // another run of the same source is going on
)

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// coordinatorRunConfig is the flags of the command, and where it writes.
type coordinatorRunConfig struct {
	g              *globalFlags
	stdout, stderr io.Writer
	nf             natsFlags
	mf             milvusFlags
	incremental    bool
	dryRun         bool
	metricsAddr    string
	sf             s3Flags
	source         string
	models         string
	set            string
	pool           string
	activate       bool
	jobSize        int
	wait           bool
	maxFailed      float64
	timeout        time.Duration
	logLevel       string
}

func newCoordinatorCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "coordinator", Short: "Enumerate a source into jobs on NATS JetStream"}
	cfg := &coordinatorRunConfig{g: g}
	run := &cobra.Command{
		Use:   "run --source s3://bucket/prefix|DIR --models MODEL[,MODEL...] [--wait]",
		Short: "List the source, publish its jobs, and (with --wait) follow them to completion",
		Long: `Take the source's lease (a second run of the same source exits with status 3
and touches nothing), list the source in key order, publish jobs of --job-size
items, checkpointing as it goes. A run interrupted by a crash is resumed by the
next run: it continues after the checkpoint and the stream drops any job
published twice.

--wait follows the workers' results until every job has one, prints a summary,
and exits with status 2 when more than --max-failed (a fraction) of the items
failed. Exit status 1 means the run itself failed (see the message).

--incremental embeds only what changed since the last complete run: it diffs
the listing against each model's manifest, publishes new and changed objects,
deletes the vectors of objects gone from the source (so it needs --milvus-addr),
and embeds everything for a model version that has no manifest yet (versions
are read from --models-dir): a new version fills a collection of its own while
the active one goes on answering queries, until ` + "`embedfleet models activate`" + `
(or --activate, which verifies and switches once the run is complete).
It waits for completion and then writes the new manifests (one per source,
model and version); an incomplete run keeps the old ones, so the next run
redoes what is missing. --dry-run prints the diff and changes nothing.

--pool NAME publishes the run's jobs for the workers started with the same
--pool only: during a model upgrade the workers of the new version run as their
own pool beside the old ones, each filling its own version's collection. Every
job carries the model versions found in --models-dir, and a worker holding
another version hands it back rather than write with the wrong one.

--set background embeds the source into each model's background set (its own
collection, MODEL@background) instead of the model's collection: unrelated
images that copy scores are normalised against (embedfleet dedup, query
--copies, serve's /v1/copies). The same workers serve it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runCoordinatorCmd(cmd.Context(), cfg)
		},
	}
	f := run.Flags()
	cfg.nf.bind(f)
	cfg.sf.bind(f)
	f.StringVar(&cfg.source, "source", "", "s3://bucket/prefix or a local folder (required)")
	f.StringVar(&cfg.models, "models", envOr("EMBEDFLEET_MODELS", ""), "models to embed with, comma-separated (env EMBEDFLEET_MODELS; required)")
	f.IntVar(&cfg.jobSize, "job-size", 64, "items per job")
	f.StringVar(&cfg.set, "set", "", "embed into this set of each model instead of its collection: background (for copy-score normalisation)")
	f.StringVar(&cfg.pool, "pool", os.Getenv("EMBEDFLEET_POOL"), "worker pool that takes the jobs (env EMBEDFLEET_POOL; empty: the default pool)")
	f.BoolVar(&cfg.wait, "wait", false, "follow the run to completion and print a summary")
	f.Float64Var(&cfg.maxFailed, "max-failed", 0.01, "with --wait: fraction of failed items above which the exit status is 2")
	f.DurationVar(&cfg.timeout, "timeout", 0, "give up after this long (0: never)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&cfg.incremental, "incremental", false, "embed only new and changed objects, delete vanished ones (implies --wait)")
	f.BoolVar(&cfg.dryRun, "dry-run", false, "with --incremental: print the diff counts and change nothing")
	f.BoolVar(&cfg.activate, "activate", false, "with --incremental: once the run is complete, verify each model version's collection and make it active (models activate, keeping 2)")
	f.StringVar(&cfg.metricsAddr, "metrics-addr", os.Getenv("EMBEDFLEET_METRICS_ADDR"), "serve /metrics, /healthz and /readyz here, e.g. :9090 (env EMBEDFLEET_METRICS_ADDR; empty: off)")
	cfg.mf.bind(f)
	cmd.AddCommand(run)
	return cmd
}

// checkTopK checks a --top-k: Milvus answers at most vecstore.MaxTopK hits,
// and a copy check asks for one more than it shows.
func checkTopK(k int) error {
	if k < 1 || k >= vecstore.MaxTopK {
		return fmt.Errorf("--top-k must be from 1 to %d, got %d", vecstore.MaxTopK-1, k)
	}
	return nil
}

func runCoordinatorCmd(ctx context.Context, cfg *coordinatorRunConfig) error {
	ms := splitList(cfg.models)
	if cfg.source == "" || len(ms) == 0 {
		return errors.New("--source and --models are required")
	}
	if cfg.maxFailed < 0 || cfg.maxFailed > 1 || cfg.maxFailed != cfg.maxFailed {
		return fmt.Errorf("--max-failed is a fraction of the items, from 0 to 1; got %g", cfg.maxFailed)
	}
	if err := bus.ValidPool(cfg.pool); err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	if cfg.activate && (!cfg.incremental || cfg.dryRun) {
		return errors.New("--activate goes with --incremental (and not --dry-run)")
	}
	if cfg.set != "" {
		if cfg.set != vecstore.SetBackground {
			return fmt.Errorf("--set %q: the one set is %s", cfg.set, vecstore.SetBackground)
		}
		for i, m := range ms {
			ms[i] = vecstore.Target(m, cfg.set)
		}
	}
	ctx, cancel := withTimeout(ctx, cfg.timeout)
	defer cancel()
	log := newLogger(cfg.stderr, cfg.logLevel)
	src, err := cfg.sf.open(cfg.source)
	if err != nil {
		return err
	}
	nc, js, topo, err := cfg.nf.connect(ctx, "embedfleet-coordinator", bus.StreamOptions{})
	if err != nil {
		return err
	}
	defer nc.Close()
	var comps []component
	if cfg.metricsAddr != "" {
		c, err := telemetryServer(cfg.metricsAddr, telemetry.NewRegistry(), natsReady(nc), log)
		if err != nil {
			return err
		}
		comps = append(comps, c)
	}
	return supervise(ctx, func(ctx context.Context) error {
		return runCoordinator(ctx, cfg, coordinator.Config{JS: js, Topology: topo, Source: src, Models: ms, JobSize: cfg.jobSize, Log: log,
			Versions: modelVersions(cfg.g, ms), Pool: cfg.pool})
	}, comps...)
}

// runCoordinator publishes (and with --wait or --incremental follows) the
// run that ccfg describes.
func runCoordinator(ctx context.Context, cfg *coordinatorRunConfig, ccfg coordinator.Config) error {
	if cfg.wait || cfg.incremental {
		// Keep the published jobs, so that lost ones can be published again.
		journal, err := coordinator.NewJournal()
		if err != nil {
			return err
		}
		defer journal.Close()
		ccfg.Journal = journal
	}
	if cfg.incremental || cfg.dryRun {
		return runIncremental(ctx, cfg, ccfg)
	}
	rec, err := coordinator.Run(ctx, ccfg)
	if errors.Is(err, bus.ErrLeaseHeld) {
		return exitError{exitLeaseHeld, err}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.stdout, "run %s: %d objects in %d jobs published\n", rec.ID, rec.Listed, rec.Jobs)
	if !cfg.wait {
		return nil
	}
	return followRun(ctx, cfg.stdout, cfg.stderr, coordinator.New(ccfg.JS, ccfg.Topology), rec, ccfg.Journal, cfg.maxFailed, nil)
}

// followRun is the sequence every command that waits for a run shares:
// follow rec to its end (republishing lost jobs from journal), print
// progress and the summary, let finish (if set) act on the summary, and
// fail with exit status 2 when more than maxFailed of the items failed.
func followRun(ctx context.Context, stdout, stderr io.Writer, coord *coordinator.Coordinator, rec jobs.Run, journal *coordinator.Journal,
	maxFailed float64, finish func(coordinator.Summary) error) error {
	sum, err := coord.WaitWith(ctx, rec, coordinator.WaitOptions{Journal: journal, Progress: func(s coordinator.Summary) {
		fmt.Fprintf(stderr, "run %s: %d/%d jobs, %d stored, %d failed, %.1f img/s\n",
			s.Run, s.Done, s.Jobs, s.Stored, len(s.Failed), float64(s.Stored)/s.Elapsed.Seconds())
	}})
	printSummary(stdout, sum)
	if err != nil {
		return err
	}
	if finish != nil {
		if err := finish(sum); err != nil {
			return err
		}
	}
	if sum.Listed > 0 && float64(len(sum.Failed))/float64(sum.Listed) > maxFailed {
		return exitError{exitFailures, fmt.Errorf("%d of %d items failed, more than --max-failed %.3f", len(sum.Failed), sum.Listed, maxFailed)}
	}
	return nil
}

func runIncremental(ctx context.Context, rc *coordinatorRunConfig, cfg coordinator.Config) error {
	out, g, mf, dryRun, maxFailed := rc.stdout, rc.g, rc.mf, rc.dryRun, rc.maxFailed
	versions := cfg.Versions
	for _, m := range cfg.Models {
		if versions[m] == "" {
			cfg.Log.Warn("model not in --models-dir: its version is not checked for upgrades", "model", m, "models_dir", g.modelsDir)
		}
	}
	icfg := coordinator.IncrementalConfig{Config: cfg, DryRun: dryRun}
	if !dryRun {
		store, err := vecstore.Connect(ctx, mf.cfg)
		if err != nil {
			return err
		}
		defer store.Close(context.Background())
		icfg.Store = store
	}
	inc, err := coordinator.RunIncremental(ctx, icfg)
	if errors.Is(err, bus.ErrLeaseHeld) {
		return exitError{exitLeaseHeld, err}
	}
	if err != nil {
		return err
	}
	defer inc.Close()
	for _, m := range cfg.Models {
		d := inc.Run.Diff[m]
		up := ""
		if d.Upgraded {
			up = " (new model version: everything embedded into its own collection)"
		}
		fmt.Fprintf(out, "diff %s: new=%d changed=%d unchanged=%d deleted=%d%s\n", m, d.New, d.Changed, d.Unchanged, d.Deleted, up)
	}
	if dryRun {
		return nil
	}
	fmt.Fprintf(out, "run %s: %d objects to embed in %d jobs published\n", inc.Run.ID, inc.Run.Listed, inc.Run.Jobs)
	err = followRun(ctx, rc.stdout, rc.stderr, coordinator.New(cfg.JS, cfg.Topology), inc.Run, cfg.Journal, maxFailed,
		func(sum coordinator.Summary) error { return inc.Finish(ctx, sum) })
	if err != nil || !rc.activate {
		return err
	}
	return activateRun(ctx, out, icfg.Store.(*vecstore.Store), cfg)
}

// activateRun makes each model version of a finished run active (see
// activateVerified) where it is not already.
func activateRun(ctx context.Context, out io.Writer, store *vecstore.Store, cfg coordinator.Config) error {
	failures, err := cfg.JS.KeyValue(ctx, cfg.Topology.FailuresBucket())
	if err != nil {
		return fmt.Errorf("failures bucket: %w", err)
	}
	for _, m := range cfg.Models {
		v := cfg.Versions[m]
		if v == "" {
			return fmt.Errorf("--activate: the version of %s is unknown (not in --models-dir)", m)
		}
		if cur, err := store.Open(ctx, m); err == nil && cur.Version == v {
			fmt.Fprintf(out, "%s version %s is already active\n", m, vecstore.VersionTag(v))
			continue
		}
		vi, err := store.FindVersion(ctx, m, v)
		if err != nil {
			return err
		}
		if err := activateVerified(ctx, out, store, cfg.Source, failures, retirer{cfg.JS, cfg.Topology}, m, vi, 2); err != nil {
			return err
		}
	}
	return nil
}

// withTimeout bounds ctx by d; d <= 0 means no bound.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// modelVersions reads each model's version from its spec in --models-dir;
// a model that is not there is left out.
func modelVersions(g *globalFlags, models []string) map[string]string {
	versions := map[string]string{}
	for _, m := range models {
		name, _ := vecstore.SplitTarget(m) // a set has its model's version
		if dir, err := embed.Resolve(g.modelsDir, name); err == nil {
			if spec, err := embed.LoadSpec(dir); err == nil {
				versions[m] = spec.Version
			}
		}
	}
	return versions
}

// serveTelemetry serves /metrics, /healthz and /readyz on addr until ctx ends.
// telemetryServer listens on addr at once (so a bad --metrics-addr fails
// the command before it starts work) and returns the server as a component
// to supervise.
func telemetryServer(addr string, reg *prometheus.Registry, ready func() error, log *slog.Logger) (component, error) {
	srv := telemetry.NewServer(addr, reg, ready)
	l, err := srv.Listen()
	if err != nil {
		return component{}, fmt.Errorf("--metrics-addr: %w", err)
	}
	log.Info("serving /metrics, /healthz, /readyz", "addr", l.Addr().String())
	return component{name: "metrics server on " + l.Addr().String(), run: func(ctx context.Context) error { return srv.Serve(ctx, l) }}, nil
}

func natsReady(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats: %s", nc.Status())
		}
		return nil
	}
}

func printSummary(w io.Writer, s coordinator.Summary) {
	state := "complete"
	if !s.Complete {
		state = "INCOMPLETE"
	}
	fmt.Fprintf(w, "run %s %s: %d listed, %d stored, %d failed, %d jobs dead-lettered, %s\n",
		s.Run, state, s.Listed, s.Stored, len(s.Failed), s.Dead, s.Elapsed.Round(time.Millisecond))
	for i, f := range s.Failed {
		if i == 20 {
			fmt.Fprintf(w, "  ... and %d more\n", len(s.Failed)-20)
			break
		}
		fmt.Fprintf(w, "  failed %s: %s\n", escape.Terminal(f.Key), escape.Terminal(f.Reason))
	}
}

// workerConfig is the flags of the command, and where it writes.
type workerConfig struct {
	g                  *globalFlags
	stdout, stderr     io.Writer
	nf                 natsFlags
	mf                 milvusFlags
	sf                 s3Flags
	models             string
	batch, fetch, prep int
	fetchMiB           int
	ackWait, drain     time.Duration
	linger             time.Duration
	prefetch           int
	upsertRows         int
	maxDeliver         int
	logLevel           string
	metricsAddr        string
	pool               string
}

func newWorkerCmd(g *globalFlags) *cobra.Command {
	cfg := &workerConfig{g: g}
	cmd := &cobra.Command{
		Use:   "worker --models MODEL[,MODEL...]",
		Short: "Pull jobs, embed their images with every model, upsert into Milvus",
		Long: `Pull jobs from NATS JetStream, fetch and decode each image once, preprocess it
for every model, run each model in batches of --batch-size, upsert the vectors
into one Milvus collection per model, publish the job's result and ack it.

Images that can never be embedded (corrupt, unsupported, too large, gone) are
recorded in the result; transient trouble (S3 5xx, Milvus unavailable) hands the
job back with a growing delay; after --max-deliver attempts the job goes to the
dead-letter stream. On SIGTERM the worker stops pulling, finishes the job in
hand within --drain-timeout (or hands it back) and exits 0.

Each model version writes its own collection: the first version of a model the
one named after it, a later version one named after its version, so that the
workers of a new version (started as their own --pool) fill a new collection
while the current one goes on answering queries. See ` + "`embedfleet models activate`" + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runWorker(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	cfg.nf.bind(f)
	cfg.mf.bind(f)
	cfg.mf.bindIndex(f)
	cfg.sf.bind(f)
	f.StringVar(&cfg.models, "models", envOr("EMBEDFLEET_MODELS", ""), "models this worker serves, comma-separated (env EMBEDFLEET_MODELS; required)")
	f.IntVar(&cfg.batch, "batch-size", envInt("EMBEDFLEET_BATCH_SIZE", 32), "images per inference batch (env EMBEDFLEET_BATCH_SIZE)")
	f.IntVar(&cfg.fetch, "fetch-concurrency", 16, "objects fetched at once")
	f.IntVar(&cfg.fetchMiB, "fetch-mib", envInt("EMBEDFLEET_FETCH_MIB", 256),
		"MiB of fetched objects held at once, waiting to be decoded; with --max-object-mib it bounds a worker's memory for encoded images (env EMBEDFLEET_FETCH_MIB)")
	f.DurationVar(&cfg.linger, "linger", 50*time.Millisecond, "a partial batch waits at most this long for more images")
	f.IntVar(&cfg.prefetch, "prefetch", 2, "jobs in hand at once (their images fill batches together)")
	f.IntVar(&cfg.upsertRows, "upsert-rows", 1024, "most rows in one Milvus write: batches embedded while a write is in flight go together in the next")
	f.IntVar(&cfg.prep, "prep-workers", 0, "goroutines that decode and preprocess (0: one per core)")
	f.StringVar(&cfg.pool, "pool", os.Getenv("EMBEDFLEET_POOL"), "worker pool to take jobs of: runs published with the same coordinator --pool (env EMBEDFLEET_POOL; empty: the default pool)")
	f.DurationVar(&cfg.ackWait, "ack-wait", 2*time.Minute, "JetStream AckWait; progress is signalled every third of it")
	f.IntVar(&cfg.maxDeliver, "max-deliver", 10, "attempts before a job is dead-lettered (with the backoff, about 5 minutes of trouble)")
	f.DurationVar(&cfg.drain, "drain-timeout", 30*time.Second, "on SIGTERM, time to finish the job in hand (keep it below the pod's grace period)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.metricsAddr, "metrics-addr", os.Getenv("EMBEDFLEET_METRICS_ADDR"), "serve /metrics, /healthz and /readyz here, e.g. :9090 (env EMBEDFLEET_METRICS_ADDR; empty: off)")
	return cmd
}

func runWorker(ctx context.Context, cfg *workerConfig) error {
	g := cfg.g
	log := newLogger(cfg.stderr, cfg.logLevel)
	opened, err := openModelList(g, cfg.models)
	if err != nil {
		return err
	}
	defer opened.close()
	if err := opened.imagesOnly("the worker"); err != nil {
		return err
	}
	nc, js, topo, err := cfg.nf.connect(ctx, "embedfleet-worker", bus.StreamOptions{})
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := topo.WorkerConsumer(ctx, js, bus.ConsumerOptions{AckWait: cfg.ackWait, MaxDeliver: cfg.maxDeliver, Pool: cfg.pool})
	if err != nil {
		return err
	}
	store, err := vecstore.Connect(ctx, cfg.mf.cfg)
	if err != nil {
		return err
	}
	defer store.Close(context.Background())
	var metrics *worker.Metrics
	var comps []component
	if cfg.metricsAddr != "" {
		reg := telemetry.NewRegistry()
		metrics = worker.NewMetrics(reg)
		c, err := telemetryServer(cfg.metricsAddr, reg, natsReady(nc), log)
		if err != nil {
			return err
		}
		comps = append(comps, c)
	}
	w, err := worker.New(ctx, worker.Config{
		JS: js, Topology: topo, Consumer: cons, Models: opened.images, Store: store, OpenSource: cfg.sf.open,
		BatchSize: cfg.batch, Linger: cfg.linger, Prefetch: cfg.prefetch, UpsertRows: cfg.upsertRows, FetchConcurrency: cfg.fetch, FetchBytes: int64(cfg.fetchMiB) << 20, PrepWorkers: cfg.prep,
		Limits:  g.limits(),
		AckWait: cfg.ackWait, MaxDeliver: cfg.maxDeliver, DrainTimeout: cfg.drain, Log: log, Metrics: metrics,
		DecoderOptions: g.decoderOptions(), FastDecode: g.fastDecode(),
	})
	if err != nil {
		return err
	}
	// The worker is the command's work; the metrics server beside it
	// stops after it, and its failure ends the worker.
	return supervise(ctx, w.Run, comps...)
}

// queryConfig is the flags of the command, and where it writes.
type queryConfig struct {
	g               *globalFlags
	stdout, stderr  io.Writer
	mf              milvusFlags
	model, img, uri string
	id, text        string
	textModel       string
	topK            int
	asJSON          bool
	copies          bool
	cf              copyFlags
}

func newQueryCmd(g *globalFlags) *cobra.Command {
	cfg := &queryConfig{g: g}
	cmd := &cobra.Command{
		Use:   "query --model MODEL (--image FILE | --text TEXT | --uri OBJECT_URI | --id ID) [--top-k K] [--json]",
		Short: "Find the stored images most similar to an image file, a text, or an indexed object",
		Long: `Embed --image with the same preprocessing and model as the indexed images (or
reuse the stored vector of --uri, an indexed object such as s3://bucket/key, or
of --id, a hit's id), search the model's collection, and print rank, cosine,
the article's score (cos+1)/2, and the URI of each hit (--json adds the ids).

--text searches by a text: the text tower that pairs with --model (CLIP's
clip-vit-b32-text for clip-vit-b32; --text-model names another) embeds it with
CLIP's tokenizer, and the image model's collection is searched. The collection
must have been indexed by the very image tower the text tower pairs with
(their spec versions); otherwise the command says so instead of answering.

--copies asks "is this a copy of an image we hold?" instead: each candidate
gets its cosine, its score normalised against the model's background set
(when it has one: see embedfleet dedup), its tier (exact: the same bytes,
copy, similar) and the verdict at --threshold.

Examples:
  embedfleet query --model dinov2-base --image photo.jpg --top-k 5
  embedfleet query --model clip-vit-b32 --text "a dog playing in the snow"
  embedfleet query --model dinov2-base --image photo.jpg --copies --top-k 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runQuery(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	cfg.mf.bind(f)
	cfg.mf.bindSearch(f, "strong")
	f.StringVar(&cfg.model, "model", "", "model whose collection to search (required)")
	f.StringVar(&cfg.img, "image", "", "query image file")
	f.StringVar(&cfg.text, "text", "", "query text, embedded by the model's text tower (CLIP)")
	f.StringVar(&cfg.textModel, "text-model", "", "with --text: the text model (default MODEL-text)")
	f.StringVar(&cfg.uri, "uri", "", "an indexed object's URI, whose stored vector is the query")
	f.StringVar(&cfg.id, "id", "", "an indexed object's id (as --json prints it), whose stored vector is the query")
	f.IntVar(&cfg.topK, "top-k", 10, "number of results")
	f.BoolVar(&cfg.asJSON, "json", false, "print JSON")
	f.BoolVar(&cfg.copies, "copies", false, "answer with candidate copies: raw and normalised scores, tier and verdict (not with --text)")
	cfg.cf.bind(f)
	return cmd
}

func runQuery(ctx context.Context, cfg *queryConfig) error {
	g := cfg.g
	given := 0
	for _, v := range []string{cfg.img, cfg.uri, cfg.id, cfg.text} {
		if v != "" {
			given++
		}
	}
	if cfg.model == "" || given != 1 {
		return errors.New("--model and exactly one of --image, --text, --uri or --id are required")
	}
	if err := checkTopK(cfg.topK); err != nil {
		return err
	}
	if cfg.text != "" && strings.TrimSpace(cfg.text) == "" {
		return errors.New("--text is empty: say what to look for")
	}
	if cfg.copies && cfg.text != "" {
		return errors.New("--copies takes an image, --uri or --id: a text is not a copy of an image")
	}
	ms := &openedModels{}
	defer ms.close()
	switch {
	case cfg.img != "":
		if _, err := ms.addImage(g, cfg.model); err != nil {
			return err
		}
	case cfg.text != "":
		if cfg.textModel == "" {
			cfg.textModel = cfg.model + "-text"
			if spec, err := resolveSpec(g, cfg.model); err == nil && spec.IsText() {
				cfg.textModel = cfg.model
			}
		}
		if _, err := ms.addText(g, cfg.textModel); err != nil {
			return fmt.Errorf("--text needs the text tower that pairs with %s: %w", cfg.model, err)
		}
	}
	eng, err := newEngine(g, ms, 0)
	if err != nil {
		return err
	}
	defer eng.Close()
	store, err := vecstore.Connect(ctx, cfg.mf.cfg)
	if err != nil {
		return err
	}
	defer store.Close(context.Background())
	if cfg.copies {
		spec, err := resolveSpec(g, cfg.model)
		if err != nil {
			return err
		}
		// Embedded by the version of the collection that answers.
		col, err := store.Open(ctx, spec.Name)
		if err != nil {
			return err
		}
		enc, err := search.New(store, eng).EncoderFor(spec.Name, col)
		if err != nil {
			return err
		}
		return queryCopies(ctx, cfg, store, func(data []byte) ([]float32, error) { return eng.EmbedImage(ctx, enc, data) }, spec.Name)
	}
	s := search.New(store, eng)
	var hits []search.Hit
	switch {
	case cfg.img != "":
		data, err := readFileLimited(cfg.img)
		if err != nil {
			return err
		}
		hits, err = s.ByImage(ctx, ms.images[0].Spec().Name, data, cfg.topK)
		if err != nil {
			return err
		}
	case cfg.text != "":
		hits, err = s.ByText(ctx, ms.texts[0].Spec().Name, cfg.text, cfg.topK)
		if err != nil {
			return err
		}
	default:
		spec, err := resolveSpec(g, cfg.model)
		if err != nil {
			return err
		}
		if cfg.uri != "" {
			hits, err = s.ByObject(ctx, spec.Name, cfg.uri, cfg.topK)
		} else {
			hits, err = s.ByID(ctx, spec.Name, cfg.id, cfg.topK)
		}
		if err != nil {
			return err
		}
	}
	return printHits(cfg.stdout, hits, cfg.asJSON)
}

func printHits(w io.Writer, hits []search.Hit, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return enc.Encode(hits)
	}
	fmt.Fprintf(w, "%-4s %-9s %-9s %s\n", "RANK", "COSINE", "SCORE", "URI")
	for _, h := range hits {
		fmt.Fprintf(w, "%-4d %-9.6f %-9.6f %s\n", h.Rank, h.Cosine, h.Score, escape.Terminal(h.URI))
	}
	return nil
}

func resolveSpec(g *globalFlags, ref string) (embed.Spec, error) {
	if s, ok := embed.Builtin(ref); ok {
		if dir, err := embed.Resolve(g.modelsDir, ref); err == nil {
			return embed.LoadSpec(dir)
		}
		return s, nil
	}
	dir, err := embed.Resolve(g.modelsDir, ref)
	if err != nil {
		return embed.Spec{}, err
	}
	return embed.LoadSpec(dir)
}

// readFileLimited reads a local input file (a regular file only, see
// objstore.OpenFile) within --max-object-mib.
func readFileLimited(path string) ([]byte, error) {
	f, err := objstore.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f)
}
