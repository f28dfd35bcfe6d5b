package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/copies"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/httpapi"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/telemetry"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// serveConfig is the flags of the command, and where it writes.
type serveConfig struct {
	g                *globalFlags
	stdout, stderr   io.Writer
	mf               milvusFlags
	models, listen   string
	textModels       string
	logLevel         string
	maxBodyMiB       int
	maxBatch, maxTop int
	maxInFlight      int
	maxMemoryMiB     int
	linger, timeout  time.Duration
	grace            time.Duration
	s3               s3Flags
	tokenFile        string
	cf               copyFlags
}

func newServeCmd(g *globalFlags) *cobra.Command {
	cfg := &serveConfig{g: g}
	cmd := &cobra.Command{
		Use:   "serve --models MODEL[,MODEL...] [--text-models auto] [--listen :8080]",
		Short: "Serve searches over HTTP: upload an image, send a text, or name an indexed object",
		Long: `Serve the query path over HTTP, with JSON answers:

  POST /v1/search?model=M&k=10        the body is the query image (raw bytes, or
                                      a multipart form with an "image" file)
  GET  /v1/search?model=M&text=T&k=10 the text T, embedded by the text tower that
                                      pairs with image model M (CLIP's), searches M
  GET  /v1/search?model=M&uri=U&k=10  the stored vector of indexed object U is the query
  GET  /v1/search?model=M&id=ID&k=10  the same by a hit's id
  POST /v1/copies?model=M&k=3         is the uploaded image a copy of one we hold?
  GET  /v1/copies?model=M&uri=U|id=ID the same for an indexed object: candidates with
                                      cosine, score (normalised against the model's
                                      background set when it has one), tier (exact,
                                      copy, similar) and verdict at --threshold
  GET  /v1/models                     the models served and their collections
  GET  /v1/thumbnail?model=M&id=ID&size=S, /v1/original?model=M&id=ID
                                      an indexed object as a JPEG thumbnail, or its bytes
  GET  /healthz, /readyz              liveness, readiness (Milvus answers)
  GET  /metrics                       Prometheus (behind the token, like the API)

Each hit has rank, id, uri, cosine and the article's score (cos+1)/2. Uploads
are embedded with the same preprocessing and model as the indexed images;
uploads that arrive within --linger of each other share one inference call
(at most --max-batch images); so do text queries. model may be left out when
one image model is served.

--text-models auto (the default) also loads, for each image model M, the text
model M-text when it is installed (clip-vit-b32-text for clip-vit-b32); a text
model serves only when its spec pairs with the served image model's version.

Errors are JSON {"error", "status"}: 400 bad parameters, 404 unknown model,
object, collection or text tower, 409 a text tower whose image tower is not
the collection's, 413 upload too large, 415 not an image, 422 corrupt
image, 503 Milvus unavailable, --max-inflight uploads already in hand or the
--max-memory-mib budget in use (with Retry-After), 504 past --timeout (the
answer goes out at the deadline, whatever is still running). Uploads,
thumbnails and originals are all admitted against the one --max-memory-mib
budget (docs/security.md states the bound). On SIGTERM the server stops
accepting, finishes requests in flight within --grace, and exits 0.

The search page is at / (GET http://HOST:PORT/): choose a model, drop, paste or
pick an image, or type a text; results show as thumbnails (read from the
indexed objects with the --s3-* settings, as the worker reads them: only
objects that have a row in a collection); "More like this" searches by a
result. With --auth-token-file the page asks for the token once, and every
route but the page, its files and the health checks needs it (a Prometheus
scrape sends it with authorization.credentials_file).

Examples:
  curl --data-binary @photo.jpg 'http://localhost:8080/v1/search?model=dinov2-base&k=5'
  curl 'http://localhost:8080/v1/search?model=clip-vit-b32&k=5&text=a+dog+in+the+snow'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runServe(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	cfg.mf.bind(f)
	cfg.mf.bindSearch(f, "bounded")
	f.StringVar(&cfg.models, "models", envOr("EMBEDFLEET_MODELS", "clip-vit-b32,dinov2-base"), "models to serve, comma-separated (env EMBEDFLEET_MODELS)")
	f.StringVar(&cfg.textModels, "text-models", envOr("EMBEDFLEET_TEXT_MODELS", "auto"),
		"text towers to serve: auto (MODEL-text for each image model, when installed), none, or a comma-separated list (env EMBEDFLEET_TEXT_MODELS)")
	f.StringVar(&cfg.listen, "listen", envOr("EMBEDFLEET_LISTEN", ":8080"), "address to serve on (env EMBEDFLEET_LISTEN)")
	f.IntVar(&cfg.maxBodyMiB, "max-body-mib", 32, "largest upload, MiB")
	f.IntVar(&cfg.maxBatch, "max-batch", 16, "uploads embedded in one inference call")
	f.IntVar(&cfg.maxInFlight, "max-inflight", 64, "uploads handled at once; more get 503 with Retry-After")
	f.IntVar(&cfg.maxMemoryMiB, "max-memory-mib", envInt("EMBEDFLEET_SERVE_MAX_MEMORY_MIB", 2048),
		"memory budget of the uploads in flight, MiB: each is admitted by its body size, then by what its header says decoding takes; one that does not fit now gets 503, one that never could 413 (env EMBEDFLEET_SERVE_MAX_MEMORY_MIB; docs/security.md)")
	f.IntVar(&cfg.maxTop, "max-k", 1000, "largest k a request may ask for")
	f.DurationVar(&cfg.linger, "linger", 2*time.Millisecond, "how long a batch waits for more uploads")
	f.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "per-request limit")
	f.DurationVar(&cfg.grace, "grace", 20*time.Second, "on SIGTERM, time for requests in flight (keep it below the pod's grace period)")
	f.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.tokenFile, "auth-token-file", os.Getenv("EMBEDFLEET_SERVE_TOKEN_FILE"),
		"file whose first line is the bearer token every request but the page and the health checks must carry (env EMBEDFLEET_SERVE_TOKEN_FILE; empty: none, and a warning when listening beyond loopback)")
	cfg.s3.bindConn(f)
	cfg.cf.bind(f)
	return cmd
}

func runServe(ctx context.Context, cfg *serveConfig) error {
	g := cfg.g
	if cfg.maxTop < 1 || cfg.maxTop >= vecstore.MaxTopK {
		return fmt.Errorf("--max-k must be from 1 to %d (below %d, Milvus's limit; a copy check asks for one more), got %d", vecstore.MaxTopK-1, vecstore.MaxTopK, cfg.maxTop)
	}
	log := newLogger(cfg.stderr, cfg.logLevel)
	opened, err := openModelList(g, withTextModels(g, cfg.models, cfg.textModels, cfg.stderr))
	if err != nil {
		return err
	}
	defer opened.close()
	store, err := vecstore.Connect(ctx, cfg.mf.cfg)
	if err != nil {
		return err
	}
	defer store.Close(context.Background())
	token, err := readToken(cfg.tokenFile)
	if err != nil {
		return err
	}
	ck, err := cfg.cf.checker(store)
	if err != nil {
		return err
	}
	return serveSearch(ctx, log, store, opened, cfg.listen, searchOptions{
		maxBody: int64(cfg.maxBodyMiB) << 20, maxBatch: cfg.maxBatch, maxK: cfg.maxTop, maxInFlight: cfg.maxInFlight,
		maxMemory: int64(cfg.maxMemoryMiB) << 20, linger: cfg.linger, timeout: cfg.timeout, grace: cfg.grace, decoderOptions: g.decoderOptions(), fastDecode: g.fastDecode(),
		readObject: objstore.NewObjects(cfg.s3.cfg).Get, authToken: token, copies: ck,
	}, nil)
}

// loopback reports whether a listener is reachable from this machine only.
func loopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// readToken reads a bearer token from a file (its first line).
func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := objstore.OpenFile(path)
	if err != nil {
		return "", fmt.Errorf("--auth-token-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("--auth-token-file: %w", err)
	}
	tok := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	if len(tok) < 16 {
		return "", fmt.Errorf("--auth-token-file %s: the token is %d characters; use at least 16 (e.g. openssl rand -hex 32)", path, len(tok))
	}
	return tok, nil
}

// withTextModels adds to the image models of list the text models that
// spec asks for: auto (each image model's MODEL-text, when it is installed
// in the models folder with its tokenizer files; a warning says why one is
// left out), none, or a comma-separated list.
func withTextModels(g *globalFlags, list, spec string, warn io.Writer) string {
	switch spec {
	case "none", "":
		return list
	case "auto":
		out := list
		for _, m := range splitList(list) {
			dir, err := embed.Resolve(g.modelsDir, m+"-text")
			if err != nil {
				continue // none installed: nothing to say
			}
			ts, err := embed.LoadSpec(dir)
			if err == nil {
				_, _, err = embed.TokenizerFiles(dir, ts, g.tokDir)
			}
			if err != nil {
				fmt.Fprintf(warn, "embedfleet: text model %s-text left out (--text-models auto): %v\n", m, err)
				continue
			}
			out += "," + m + "-text"
		}
		return out
	}
	return list + "," + spec
}

// softMemoryLimit is the Go runtime's soft memory limit for a query server
// with a budget of maxMemory: buffers given back to the budget are garbage
// until the next collection, and the limit makes the collector run before
// they pile up past the budget. GOMEMLIMIT, when set, wins (0: leave it).
func softMemoryLimit(maxMemory int64) int64 {
	if maxMemory <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	return maxMemory + serveHeapSlack
}

// serveHeapSlack is the Go heap a query server needs beyond its upload
// budget: connections, batches, Milvus answers, metrics.
const serveHeapSlack = 256 << 20

type searchOptions struct {
	maxBody         int64
	maxBatch, maxK  int
	maxInFlight     int
	maxMemory       int64
	linger, timeout time.Duration
	grace           time.Duration
	decoderOptions  []imageprep.DecoderOption // as the worker decodes
	fastDecode      bool
	readObject      func(ctx context.Context, uri string, max int64) ([]byte, error)
	authToken       string
	copies          *copies.Checker // nil: the defaults
}

// serveSearch serves the HTTP query API (and /metrics) on listen until ctx
// ends, then shuts down within opts.grace. started, if set, gets the bound
// address once the server accepts connections.
func serveSearch(ctx context.Context, log *slog.Logger, store *vecstore.Store, ms *openedModels, listen string,
	opts searchOptions, started func(addr string)) error {
	reg := telemetry.NewRegistry()
	api, err := httpapi.New(httpapi.Config{
		Store: store, Models: ms.images, TextModels: ms.texts, Limits: imageprepLimits(), DecoderOptions: opts.decoderOptions, FastDecode: opts.fastDecode, MaxBodyBytes: opts.maxBody,
		MaxBatch: opts.maxBatch, MaxTopK: opts.maxK, MaxInFlight: opts.maxInFlight, MaxMemoryBytes: opts.maxMemory, Linger: opts.linger, Timeout: opts.timeout,
		Log: log, Registry: reg, ReadObject: opts.readObject, AuthToken: opts.authToken, Copies: opts.copies,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), SoftMemoryLimit: softMemoryLimit(opts.maxMemory),
	})
	if err != nil {
		return err
	}
	defer api.Close()
	if opts.timeout <= 0 {
		opts.timeout = 30 * time.Second
	}
	if opts.grace <= 0 {
		opts.grace = 20 * time.Second
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: opts.timeout + 10*time.Second,
		WriteTimeout: opts.timeout + 10*time.Second, IdleTimeout: 2 * time.Minute}
	var names, texts []string
	for _, m := range ms.images {
		names = append(names, m.Spec().Name)
	}
	for _, m := range ms.texts {
		texts = append(texts, m.Spec().Name)
	}
	log.Info("serving", "addr", l.Addr().String(), "models", names, "text_models", texts, "page", "http://"+l.Addr().String()+"/")
	if opts.authToken == "" && !loopback(l.Addr()) {
		log.Warn("serving beyond loopback with no access token: anyone who reaches this address can search and read the indexed images (--auth-token-file)", "addr", l.Addr().String())
	}
	if started != nil {
		started(l.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", opts.grace)
	sctx, cancel := context.WithTimeout(context.Background(), opts.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
