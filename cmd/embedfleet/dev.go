package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/worker"
)

// milvusLiteVersion is the milvus-lite that `make deps` installs; a test
// keeps it equal to deploy/install/deps.sh.
const milvusLiteVersion = "2.5.1"

func defaultMilvusBin() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "embedfleet", "milvus-lite-"+milvusLiteVersion, "lib", "milvus")
	}
	return "milvus"
}

// devConfig is the flags of the command, and where it writes.
type devConfig struct {
	g                  *globalFlags
	stdout, stderr     io.Writer
	sf                 s3Flags
	images, models     string
	query, queryText   string
	textModels         string
	topK, workers      int
	dataDir, milvusBin string
	milvusAddr         string
	batch, jobSize     int
	logLevel           string
	serveAddr          string
}

func newDevCmd(g *globalFlags) *cobra.Command {
	cfg := &devConfig{g: g}
	cmd := &cobra.Command{
		Use:   "dev --images DIR|s3://bucket/prefix --models MODEL[,MODEL...] [--query FILE] [--query-text TEXT] [--serve ADDR]",
		Short: "Run the whole system in one process: NATS JetStream, milvus-lite, coordinator, workers, then a query",
		Long: `Index a folder (or bucket) with the real pipeline on embedded defaults: an
in-process NATS JetStream server, a milvus-lite server started as a child
process (or --milvus-addr), a coordinator run and --workers workers in this
process. It prints the run's summary, then, with --query, the images most
similar to the query image for each model, and with --query-text, the images
that the text tower of each model that has one (clip-vit-b32-text for
clip-vit-b32, see --text-models) finds for the text. With --serve it then keeps the
stack up and serves the HTTP query API there (as ` + "`embedfleet serve`" + ` does) until
Ctrl-C.

State lives in --data-dir (a temporary folder, removed at exit, by default).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runDev(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	cfg.sf.bind(f)
	f.StringVar(&cfg.images, "images", "", "folder or s3://bucket/prefix to index (required)")
	f.StringVar(&cfg.models, "models", "clip-vit-b32,dinov2-base", "models, comma-separated")
	f.StringVar(&cfg.query, "query", "", "after indexing, search with this image")
	f.StringVar(&cfg.queryText, "query-text", "", "after indexing, search with this text (models with a text tower)")
	f.StringVar(&cfg.textModels, "text-models", "auto", "text towers to load: auto (MODEL-text for each image model, when installed), none, or a comma-separated list")
	f.IntVar(&cfg.topK, "top-k", 5, "results per query")
	f.IntVar(&cfg.workers, "workers", 1, "workers in this process")
	f.IntVar(&cfg.batch, "batch-size", 32, "images per inference batch")
	f.IntVar(&cfg.jobSize, "job-size", 64, "items per job")
	f.StringVar(&cfg.dataDir, "data-dir", "", "where NATS and milvus-lite keep their data (default: a temporary folder)")
	f.StringVar(&cfg.milvusBin, "milvus-bin", envOr("EMBEDFLEET_MILVUS_BIN", defaultMilvusBin()), "milvus-lite server binary (env EMBEDFLEET_MILVUS_BIN; `make deps` installs it)")
	f.StringVar(&cfg.milvusAddr, "milvus-addr", "", "use this Milvus instead of starting milvus-lite")
	f.StringVar(&cfg.logLevel, "log-level", "warn", "debug, info, warn or error")
	f.StringVar(&cfg.serveAddr, "serve", "", "after indexing, serve the HTTP query API here, e.g. 127.0.0.1:8080, until Ctrl-C")
	return cmd
}

func runDev(ctx context.Context, cfg *devConfig) error {
	g := cfg.g
	ms := splitList(cfg.models)
	if cfg.images == "" || len(ms) == 0 {
		return errors.New("--images and --models are required")
	}
	if err := checkTopK(cfg.topK); err != nil {
		return err
	}
	log := newLogger(cfg.stderr, cfg.logLevel)
	out := cfg.stdout
	if cfg.dataDir == "" {
		d, err := os.MkdirTemp("", "embedfleet-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		cfg.dataDir = d
	}
	src, err := cfg.sf.open(cfg.images)
	if err != nil {
		return err
	}
	opened, err := openModelList(g, withTextModels(g, cfg.models, cfg.textModels, cfg.stderr))
	if err != nil {
		return err
	}
	defer opened.close()
	if cfg.queryText != "" && len(opened.texts) == 0 {
		return fmt.Errorf("--query-text: none of %s has a text model installed (CLIP's: clip-vit-b32-text; docs/models.md)", cfg.models)
	}
	eng, err := newEngine(g, opened, 0)
	if err != nil {
		return err
	}
	defer eng.Close()

	st, err := startEmbedded(ctx, stack.Config{DataDir: cfg.dataDir, MilvusBin: cfg.milvusBin, MilvusAddr: cfg.milvusAddr})
	if err != nil {
		return err
	}
	defer st.close()
	js, topo, store := st.js, st.topo, st.store

	cons, err := topo.WorkerConsumer(ctx, js, bus.ConsumerOptions{Workers: cfg.workers})
	if err != nil {
		return err
	}
	var comps []component
	for i := range cfg.workers {
		w, err := worker.New(ctx, worker.Config{JS: js, Topology: topo, Consumer: cons, Models: opened.images, Store: store,
			OpenSource: cfg.sf.open, BatchSize: cfg.batch, Name: "dev-worker-" + strconv.Itoa(i), Log: log,
			DecoderOptions: g.decoderOptions(), FastDecode: g.fastDecode()})
		if err != nil {
			return err
		}
		comps = append(comps, component{name: "dev-worker-" + strconv.Itoa(i), run: w.Run})
	}
	// Index (and query) while the workers run; a worker that fails
	// ends the run with its error. The workers stop before serving.
	err = supervise(ctx, func(ctx context.Context) error {
		coord := coordinator.New(js, topo)
		rec, err := coord.Run(ctx, coordinator.Config{Source: src, Models: eng.ImageModels(), JobSize: cfg.jobSize, Log: log})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "dev: run %s: %d images in %d jobs from %s\n", rec.ID, rec.Listed, rec.Jobs, src.URI())
		sum, err := coord.Wait(ctx, rec, func(s coordinator.Summary) {
			fmt.Fprintf(cfg.stderr, "dev: %d/%d jobs, %d stored, %d failed, %.1f img/s\n",
				s.Done, s.Jobs, s.Stored, len(s.Failed), float64(s.Stored)/s.Elapsed.Seconds())
		})
		printSummary(out, sum)
		if err != nil {
			return err
		}
		s := search.New(store, eng)
		if cfg.query != "" {
			data, err := readFileLimited(cfg.query)
			if err != nil {
				return err
			}
			for _, name := range eng.ImageModels() {
				hits, err := s.ByImage(ctx, name, data, cfg.topK)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "\nquery %s with %s:\n", cfg.query, name)
				if err := printHits(out, hits, false); err != nil {
					return err
				}
			}
		}
		if cfg.queryText != "" {
			for _, name := range eng.ImageModels() {
				ts, ok := eng.TextFor(name)
				if !ok {
					continue
				}
				hits, err := s.ByText(ctx, name, cfg.queryText, cfg.topK)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "\nquery %q with %s (text tower %s):\n", cfg.queryText, name, ts.Name)
				if err := printHits(out, hits, false); err != nil {
					return err
				}
			}
		}
		return nil
	}, comps...)
	if err != nil || cfg.serveAddr == "" {
		return err
	}
	return serveSearch(ctx, log, store, opened, cfg.serveAddr, searchOptions{grace: 5 * time.Second, decoderOptions: g.decoderOptions(), fastDecode: g.fastDecode(),
		readObject: objstore.NewObjects(cfg.sf.cfg).Get}, func(addr string) {
		fmt.Fprintf(out, "\ndev: serving searches on http://%s (Ctrl-C stops), e.g.\n"+
			"  curl --data-binary @photo.jpg 'http://%s/v1/search?model=%s&k=5'\n", addr, addr, ms[0])
	})
}
