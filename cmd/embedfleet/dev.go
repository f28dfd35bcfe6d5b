package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
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

func newDevCmd(g *globalFlags) *cobra.Command {
	var (
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
	)
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
			ms := splitList(models)
			if images == "" || len(ms) == 0 {
				return errors.New("--images and --models are required")
			}
			ctx := cmd.Context()
			log := newLogger(cmd.ErrOrStderr(), logLevel)
			out := cmd.OutOrStdout()
			if dataDir == "" {
				d, err := os.MkdirTemp("", "embedfleet-dev-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(d)
				dataDir = d
			}
			src, err := sf.open(images)
			if err != nil {
				return err
			}
			opened, err := openModelList(g, withTextModels(g, models, textModels, cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			defer opened.close()
			if queryText != "" && len(opened.texts) == 0 {
				return fmt.Errorf("--query-text: none of %s has a text model installed (CLIP's: clip-vit-b32-text; docs/models.md)", models)
			}
			eng, err := newEngine(g, opened, 0)
			if err != nil {
				return err
			}
			defer eng.Close()

			st, err := startEmbedded(ctx, stack.Config{DataDir: dataDir, MilvusBin: milvusBin, MilvusAddr: milvusAddr})
			if err != nil {
				return err
			}
			defer st.close()
			js, topo, store := st.js, st.topo, st.store

			cons, err := topo.WorkerConsumer(ctx, js, bus.ConsumerOptions{Workers: workers})
			if err != nil {
				return err
			}
			var comps []component
			for i := range workers {
				w, err := worker.New(ctx, worker.Config{JS: js, Topology: topo, Consumer: cons, Models: opened.images, Store: store,
					OpenSource: sf.open, BatchSize: batch, Name: "dev-worker-" + strconv.Itoa(i), Log: log,
					DecoderOptions: g.decoderOptions()})
				if err != nil {
					return err
				}
				comps = append(comps, component{name: "dev-worker-" + strconv.Itoa(i), run: w.Run})
			}
			// Index (and query) while the workers run; a worker that fails
			// ends the run with its error. The workers stop before serving.
			err = supervise(ctx, func(ctx context.Context) error {
				coord := coordinator.New(js, topo)
				rec, err := coord.Run(ctx, coordinator.Config{Source: src, Models: eng.ImageModels(), JobSize: jobSize, Log: log})
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "dev: run %s: %d images in %d jobs from %s\n", rec.ID, rec.Listed, rec.Jobs, src.URI())
				sum, err := coord.Wait(ctx, rec, func(s coordinator.Summary) {
					fmt.Fprintf(cmd.ErrOrStderr(), "dev: %d/%d jobs, %d stored, %d failed, %.1f img/s\n",
						s.Done, s.Jobs, s.Stored, len(s.Failed), float64(s.Stored)/s.Elapsed.Seconds())
				})
				printSummary(out, sum)
				if err != nil {
					return err
				}
				s := search.New(store, eng)
				if query != "" {
					data, err := readFileLimited(query)
					if err != nil {
						return err
					}
					for _, name := range eng.ImageModels() {
						hits, err := s.ByImage(ctx, name, data, topK)
						if err != nil {
							return err
						}
						fmt.Fprintf(out, "\nquery %s with %s:\n", query, name)
						if err := printHits(out, hits, false); err != nil {
							return err
						}
					}
				}
				if queryText != "" {
					for _, name := range eng.ImageModels() {
						ts, ok := eng.TextFor(name)
						if !ok {
							continue
						}
						hits, err := s.ByText(ctx, name, queryText, topK)
						if err != nil {
							return err
						}
						fmt.Fprintf(out, "\nquery %q with %s (text tower %s):\n", queryText, name, ts.Name)
						if err := printHits(out, hits, false); err != nil {
							return err
						}
					}
				}
				return nil
			}, comps...)
			if err != nil || serveAddr == "" {
				return err
			}
			return serveSearch(ctx, log, store, opened, serveAddr, searchOptions{grace: 5 * time.Second, decoderOptions: g.decoderOptions()}, func(addr string) {
				fmt.Fprintf(out, "\ndev: serving searches on http://%s (Ctrl-C stops), e.g.\n"+
					"  curl --data-binary @photo.jpg 'http://%s/v1/search?model=%s&k=5'\n", addr, addr, ms[0])
			})
		},
	}
	f := cmd.Flags()
	sf.bind(f)
	f.StringVar(&images, "images", "", "folder or s3://bucket/prefix to index (required)")
	f.StringVar(&models, "models", "clip-vit-b32,dinov2-base", "models, comma-separated")
	f.StringVar(&query, "query", "", "after indexing, search with this image")
	f.StringVar(&queryText, "query-text", "", "after indexing, search with this text (models with a text tower)")
	f.StringVar(&textModels, "text-models", "auto", "text towers to load: auto (MODEL-text for each image model, when installed), none, or a comma-separated list")
	f.IntVar(&topK, "top-k", 5, "results per query")
	f.IntVar(&workers, "workers", 1, "workers in this process")
	f.IntVar(&batch, "batch-size", 32, "images per inference batch")
	f.IntVar(&jobSize, "job-size", 64, "items per job")
	f.StringVar(&dataDir, "data-dir", "", "where NATS and milvus-lite keep their data (default: a temporary folder)")
	f.StringVar(&milvusBin, "milvus-bin", envOr("EMBEDFLEET_MILVUS_BIN", defaultMilvusBin()), "milvus-lite server binary (env EMBEDFLEET_MILVUS_BIN; `make deps` installs it)")
	f.StringVar(&milvusAddr, "milvus-addr", "", "use this Milvus instead of starting milvus-lite")
	f.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	f.StringVar(&serveAddr, "serve", "", "after indexing, serve the HTTP query API here, e.g. 127.0.0.1:8080, until Ctrl-C")
	return cmd
}
