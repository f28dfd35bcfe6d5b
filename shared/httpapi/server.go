// Package httpapi is the query server behind `embedfleet serve`: it searches
// a model's collection by an uploaded image or by an indexed object and
// answers in JSON.
//
//	POST /v1/search?model=M&k=10        body: the image (raw, or multipart field "image")
//	GET  /v1/search?model=M&text=T&k=10 a text, embedded by the text tower that pairs with M
//	GET  /v1/search?model=M&uri=U&k=10  the stored vector of indexed object U is the query
//	GET  /v1/search?model=M&id=ID&k=10  the same by primary key (a hit's id)
//	POST /v1/copies?model=M&k=10        is the uploaded image a copy of one held? candidates
//	                                    with raw and normalised scores, tier and verdict
//	GET  /v1/copies?model=M&uri=U|id=ID the same for an indexed object (itself left out)
//	GET  /v1/models                     the models served, with their collections
//	GET  /v1/thumbnail?model=M&id=ID&size=S  a JPEG of an indexed object, at most S px a side
//	GET  /v1/original?model=M&id=ID     the indexed object's own bytes
//	GET  /                              the search page (embedded in the binary)
//	GET  /healthz, /readyz              liveness; readiness (Milvus answers)
//
// Uploads are decoded and preprocessed by the engine's decoder pool, then
// embedded in small batches per model (requests that arrive within Linger
// of each other share one inference call), so concurrent clients keep a
// GPU busy instead of queueing on it one image at a time. Text queries are
// batched the same way.
package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/embedfleet/embedfleet/shared/cliptok"
	"github.com/embedfleet/embedfleet/shared/copies"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// Config of a Server. Store and at least one image model are required.
type Config struct {
	Store  *vecstore.Store
	Models []engine.ImageEncoder // served image models; each one's Spec().Name is its name in requests
	// TextModels are text towers (CLIP's); each searches the collection of
	// the image model it pairs with, which must be served too.
	TextModels []engine.TextEncoder
	// MaxTextBytes is the longest text query; default 4096 (CLIP reads
	// only its first 75 tokens anyway).
	MaxTextBytes int
	Limits       imageprep.Limits
	// DecoderOptions and FastDecode: how query images are decoded; should
	// match the worker.
	DecoderOptions []imageprep.DecoderOption
	FastDecode     bool

	MaxBodyBytes int64 // largest upload; default 32 MiB
	DefaultTopK  int   // default 10
	MaxTopK      int   // default 1000
	MaxBatch     int   // uploads embedded in one inference call; default 16
	MaxInFlight  int   // uploads handled at once; more get 503 at once; default 64
	// MaxMemoryBytes is the budget every upload in flight is admitted
	// against: its body (Content-Length, or MaxBodyBytes until read), then
	// the memory its header says decoding will take (imageprep.Peek). One
	// that does not fit now gets 503 with Retry-After; one that could never
	// fit, 413. Default 2 GiB.
	MaxMemoryBytes int64
	Linger         time.Duration // how long a batch waits for more uploads; default 2 ms
	Timeout        time.Duration // per request; default 30 s
	Log            *slog.Logger
	Registry       prometheus.Registerer // nil: no metrics

	// ReadObject reads an indexed object's bytes for the search page's
	// thumbnails and originals (objstore.Objects.Get, with the worker's S3
	// settings); nil: the page shows no images.
	ReadObject func(ctx context.Context, uri string, max int64) ([]byte, error)
	// ThumbnailCacheBytes bounds the encoded thumbnails kept in memory;
	// default 64 MiB. ThumbnailConcurrency bounds the objects read and
	// decoded for thumbnails at once; default 4.
	ThumbnailCacheBytes  int64
	ThumbnailConcurrency int
	// Copies scores GET and POST /v1/copies (thresholds, normalisation);
	// nil: SSCD's recipe and the default thresholds.
	Copies *copies.Checker
	// AuthToken, when set, is the bearer token every request but the page,
	// its files and the health checks must carry (/metrics too).
	AuthToken string
	// Metrics, when set, is served at GET /metrics, behind the token and
	// the security headers like every other route.
	Metrics http.Handler
	// SoftMemoryLimit, when set, is the Go runtime's soft memory limit
	// (debug.SetMemoryLimit) the server keeps, less what native code
	// (libjpeg) holds of the budget at the moment; 0 leaves the runtime's
	// limit alone. A query server sets MaxMemoryBytes plus its heap slack,
	// so that the collector runs before freed buffers pile up.
	SoftMemoryLimit int64
}

// retainPixels: the query server's decoders keep buffers only for images
// up to 8 MP (48 MB each, within the heap slack); a larger upload's go back
// with its share of the memory budget.
const retainPixels = 8 << 20

// DefaultMaxTextBytes is the longest text query by default (and the longest
// line of embed --text-file).
const DefaultMaxTextBytes = 4096

// Server is an http.Handler. Close it to stop its batchers.
type Server struct {
	cfg           Config
	search        *search.Searcher
	eng           *engine.Engine
	names         []string
	mux           *http.ServeMux
	uploads       chan struct{} // a slot per upload in flight
	mem           *semaphore.Weighted
	admitted      atomic.Int64 // bytes of the budget held now
	native        atomic.Int64 // of those, held by native code (libjpeg) outside the Go heap
	limitMu       sync.Mutex
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	batches       *prometheus.HistogramVec
	inFlight      prometheus.GaugeFunc
	admittedGauge prometheus.GaugeFunc
	thumbs        *thumbCache
	thumbSlots    chan struct{}
	copies        *copies.Checker
	handler       http.Handler
	routes        map[string]string // route name by "METHOD /path", for the metrics of refused requests
}

// New checks cfg and starts the engine: one batcher per model.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || len(cfg.Models) == 0 {
		return nil, errors.New("httpapi: a store and at least one model are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.DefaultTopK <= 0 {
		cfg.DefaultTopK = 10
	}
	if cfg.MaxTopK <= 0 {
		cfg.MaxTopK = 1000
	}
	if cfg.MaxTopK >= vecstore.MaxTopK {
		// Milvus's own limit; a copy check asks for one more than k.
		return nil, fmt.Errorf("httpapi: the largest k must be below %d (Milvus's limit), got %d", vecstore.MaxTopK, cfg.MaxTopK)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 16
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.MaxMemoryBytes <= 0 {
		cfg.MaxMemoryBytes = 2 << 30
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Linger <= 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxTextBytes <= 0 {
		cfg.MaxTextBytes = DefaultMaxTextBytes
	}
	if cfg.ThumbnailCacheBytes <= 0 {
		cfg.ThumbnailCacheBytes = 64 << 20
	}
	if cfg.ThumbnailConcurrency <= 0 {
		cfg.ThumbnailConcurrency = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), thumbs: newThumbCache(cfg.ThumbnailCacheBytes), thumbSlots: make(chan struct{}, cfg.ThumbnailConcurrency),
		uploads: make(chan struct{}, cfg.MaxInFlight), mem: semaphore.NewWeighted(cfg.MaxMemoryBytes), routes: map[string]string{}}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "embedfleet_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "embedfleet_http_request_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
	}, []string{"route"})
	s.inFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "embedfleet_serve_uploads_in_flight", Help: "Uploads being received or searched now (at most --max-inflight).",
	}, func() float64 { return float64(len(s.uploads)) })
	s.admittedGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "embedfleet_serve_admitted_bytes", Help: "Bytes of the --max-memory-mib upload budget held now (bodies, and what their decodes take).",
	}, s.AdmittedBytes)
	s.batches = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "embedfleet_serve_batch_images", Help: "Uploads embedded per inference call, by model.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
	}, []string{"model"})
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{s.requests, s.latency, s.batches, s.inFlight, s.admittedGauge} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("httpapi: metrics: %w", err)
			}
		}
	}
	for _, t := range cfg.TextModels {
		p := t.Spec().PairsWith
		if p == nil || !slices.ContainsFunc(cfg.Models, func(m engine.ImageEncoder) bool { return m.Spec().Name == p.Name }) {
			return nil, fmt.Errorf("httpapi: text model %s pairs with an image model that is not served", t.Spec().Name)
		}
	}
	eng, err := engine.New(engine.Options{
		Batch:  engine.BatchConfig{MaxBatch: cfg.MaxBatch, Linger: cfg.Linger},
		Limits: cfg.Limits, DecoderOptions: cfg.DecoderOptions, FastDecode: cfg.FastDecode,
		// An upload's decode buffers go with its share of the budget.
		RetainPixels: retainPixels,
		Observe: func(model string, n int, _ time.Duration, _ error) {
			s.batches.WithLabelValues(model).Observe(float64(n))
		},
	}, cfg.Models, cfg.TextModels)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	s.eng, s.search, s.names = eng, search.New(cfg.Store, eng), eng.ImageModels()
	if cfg.Copies == nil {
		cfg.Copies = &copies.Checker{Store: cfg.Store, Recipe: copies.DefaultRecipe(), Thresholds: copies.Thresholds{Copy: copies.DefaultNormalisedThreshold}}
	}
	s.copies = cfg.Copies
	s.route("POST /v1/search", "search_image", s.searchImage)
	s.route("GET /v1/search", "search_object", s.searchObject)
	s.route("GET /v1/models", "models", s.listModels)
	s.route("POST /v1/copies", "copies_image", s.copiesImage)
	s.route("GET /v1/copies", "copies_object", s.copiesObject)
	s.route("GET /v1/thumbnail", "thumbnail", s.thumbnail)
	s.route("GET /v1/original", "original", s.original)
	s.routeWeb()
	if cfg.Metrics != nil {
		s.routes["GET /metrics"] = "metrics"
		s.mux.Handle("GET /metrics", cfg.Metrics)
	}
	s.handler = s.securityHeaders(s.mux)
	s.heapLimit(0)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := cfg.Store.Ping(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return s, nil
}

// heapLimit sets the Go runtime's soft memory limit to SoftMemoryLimit less
// native, what native code holds of the budget now: the budget bounds Go
// and native memory together, and the collector must run before Go's
// garbage fills what native code holds.
func (s *Server) heapLimit(native int64) {
	if s.cfg.SoftMemoryLimit <= 0 {
		return
	}
	s.limitMu.Lock()
	defer s.limitMu.Unlock()
	debug.SetMemoryLimit(max(s.cfg.SoftMemoryLimit-s.native.Load(), s.cfg.SoftMemoryLimit/4))
}

// AdmittedBytes is how much of the upload memory budget is held now.
func (s *Server) AdmittedBytes() float64 { return float64(s.admitted.Load()) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close stops the engine's batchers once what they hold has run; later
// requests fail.
func (s *Server) Close() { s.eng.Close() }

// apiError is an error with the HTTP status it answers with.
type apiError struct {
	code       int
	msg        string
	retryAfter int // seconds, for a Retry-After header
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &apiError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// route registers h with a timeout, metrics, and one JSON error shape. The
// answer goes out at the deadline even when h is still busy (a decode near
// its own limit, a slow Milvus, an object store that reads slowly): h runs
// in its own goroutine, sees its context cancelled, and keeps what it holds
// of the memory budget until it returns, so the budget still bounds what is
// in use. h answers JSON, or a *raw (an image, a 304) that route writes as
// it is and then releases.
func (s *Server) route(pattern, name string, h func(*http.Request) (any, error)) {
	s.routes[pattern] = name
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		parent := r.Context()
		ctx, cancel := context.WithTimeout(parent, s.cfg.Timeout)
		defer cancel()
		// After the deadline h reads no more of the body: the server owns it
		// again once this handler returns.
		r = r.WithContext(ctx)
		body := r.Body
		r.Body = &ctxBody{ctx: ctx, r: body}
		type answer struct {
			body any
			err  error
		}
		done := make(chan answer, 1)
		go func() {
			body, err := h(r)
			done <- answer{body, err}
		}()
		// h gets a moment past the deadline to say why it is late (Milvus
		// away, say); then the answer is 504 whatever h is doing.
		late := time.NewTimer(s.cfg.Timeout + answerGrace)
		defer late.Stop()
		var a answer
		finished := false
		select {
		case a = <-done:
			finished = true
		case <-late.C:
			a.err = fmt.Errorf("%w: no answer within %s", context.DeadlineExceeded, s.cfg.Timeout)
		case <-parent.Done():
			a.err = parent.Err() // the client is gone
		}
		if !finished {
			// What h answers after all is dropped, and what it holds given
			// back.
			go func() {
				if rw, ok := (<-done).body.(*raw); ok {
					rw.free()
				}
			}()
		}
		reply, err := a.body, a.err
		code := http.StatusOK
		if err != nil {
			code = s.status(err)
			reply = map[string]any{"error": err.Error(), "status": code}
			if ae := (*apiError)(nil); errors.As(err, &ae) && ae.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(ae.retryAfter))
			}
			if code >= 500 {
				s.cfg.Log.Warn("request failed", "route", name, "status", code, "err", err)
			}
		}
		if rw, ok := reply.(*raw); ok {
			code = rw.code
			for k, v := range rw.header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(code)
			_, _ = w.Write(rw.body)
			rw.free()
		} else {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(reply)
		}
		if finished && code != http.StatusOK && r.ContentLength > 0 && r.ContentLength <= s.cfg.MaxBodyBytes {
			// An upload refused before its body was read (shed, say): let
			// the client finish sending, with a small buffer, so that it
			// reads the answer instead of a reset connection.
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			_, _ = io.CopyN(io.Discard, body, s.cfg.MaxBodyBytes)
		}
		s.requests.WithLabelValues(name, strconv.Itoa(code)).Inc()
		s.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	})
}

// raw is an answer that is not JSON: an image's bytes, or a 304. release,
// when set, gives back what the answer holds of the memory budget; it runs
// once the answer is written, or dropped at the deadline.
type raw struct {
	code    int
	header  map[string]string
	body    []byte
	release func()
}

func (rw *raw) free() {
	if rw != nil && rw.release != nil {
		rw.release()
		rw.release = nil
	}
}

// answerGrace is how long past its deadline a request waits for its
// handler's own error before answering 504.
const answerGrace = 200 * time.Millisecond

// ctxBody is a request body that reads nothing once its context is done.
type ctxBody struct {
	ctx context.Context
	r   io.ReadCloser
}

func (b *ctxBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	return b.r.Read(p)
}

func (b *ctxBody) Close() error { return nil } // the server closes the real body

// status maps an error to its HTTP status: the client's mistakes are 4xx
// and say what to change; Milvus being away is 503, so a load balancer
// retries elsewhere.
func (s *Server) status(err error) int {
	var ae *apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae.code
	case errors.As(err, &mbe), errors.Is(err, imageprep.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, imageprep.ErrUnsupported):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, imageprep.ErrCorrupt):
		return http.StatusUnprocessableEntity
	case errors.Is(err, vecstore.ErrInvalidID), errors.Is(err, cliptok.ErrInvalidText):
		return http.StatusBadRequest
	case errors.Is(err, vecstore.ErrNoCollection), errors.Is(err, search.ErrNotIndexed), errors.Is(err, engine.ErrUnknownModel),
		errors.Is(err, objstore.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, embed.ErrNotPaired), errors.Is(err, search.ErrVersionNotServed):
		// The collection holds another image tower's vectors: no text
		// query can be answered until the two are of one checkpoint.
		return http.StatusConflict
	case errors.Is(err, vecstore.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// Response is the answer to a search.
type Response struct {
	Model string `json:"model"`
	// Collection and ModelVersion say which version of the model answered
	// (its active one when the search began): the whole answer comes from
	// it.
	Collection   string       `json:"collection"`
	ModelVersion string       `json:"model_version"`
	K            int          `json:"k"`
	TookMS       float64      `json:"took_ms"`
	Hits         []search.Hit `json:"hits"`
}

// params reads model and k, which every search takes.
func (s *Server) params(r *http.Request) (string, int, error) {
	q := r.URL.Query()
	model := q.Get("model")
	if model == "" {
		if len(s.names) != 1 {
			return "", 0, badRequest("model is required (one of %s)", strings.Join(s.names, ", "))
		}
		model = s.names[0]
	}
	if !slices.Contains(s.names, model) {
		if _, isText := s.eng.TextFor(model); !isText || r.URL.Query().Get("text") == "" {
			return "", 0, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("model %s is not served here (served: %s)", escape.Quoted(model), strings.Join(s.names, ", "))}
		}
	}
	k := s.cfg.DefaultTopK
	if v := q.Get("k"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.MaxTopK {
			return "", 0, badRequest("k must be an integer from 1 to %d, got %s", s.cfg.MaxTopK, escape.Quoted(v))
		}
		k = n
	}
	return model, k, nil
}

func (s *Server) searchImage(r *http.Request) (any, error) {
	start := time.Now()
	model, k, err := s.params(r)
	if err != nil {
		return nil, err
	}
	srch, err := s.searcher(r)
	if err != nil {
		return nil, err
	}
	col, err := srch.Resolve(r.Context(), model)
	if err != nil {
		return nil, err
	}
	enc, err := srch.EncoderFor(model, col)
	if err != nil {
		return nil, err
	}
	v, _, err := s.embedUpload(r, enc)
	if err != nil {
		return nil, err
	}
	hits, err := srch.In(col).ByVector(r.Context(), model, v, k)
	if err != nil {
		return nil, err
	}
	return Response{Model: model, Collection: col.Name, ModelVersion: col.Version, K: k, TookMS: ms(time.Since(start)), Hits: hits}, nil
}

// embedUpload reads the request's image within the upload limits and
// embeds it with engine model enc (see search.EncoderFor); it returns the
// vector and the sha256 of the bytes.
func (s *Server) embedUpload(r *http.Request, enc string) ([]float32, string, error) {
	// Shed load rather than hold more uploads than memory allows: the
	// client (or its load balancer) retries, here or on another replica.
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	default:
		return nil, "", s.busy(fmt.Sprintf("%d uploads in flight, the most this server takes at once", s.cfg.MaxInFlight))
	}
	// The body is admitted by its declared length (the limit when it has
	// none), then by what its header says decoding will hold.
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, "", fmt.Errorf("%w: the upload is %d bytes, over the %d-byte limit", imageprep.ErrTooLarge, r.ContentLength, s.cfg.MaxBodyBytes)
	}
	adm := &admission{s: s}
	defer adm.release()
	want := min(s.cfg.MaxBodyBytes, s.cfg.MaxMemoryBytes) // an unknown length: what it may grow to
	if r.ContentLength >= 0 {
		want = r.ContentLength
		if want > s.cfg.MaxMemoryBytes {
			return nil, "", fmt.Errorf("%w: the upload is %d bytes, more than this server's memory budget for uploads (%d MiB)",
				imageprep.ErrTooLarge, want, s.cfg.MaxMemoryBytes>>20)
		}
	}
	if !adm.take(want) {
		return nil, "", s.busy("the memory budget for uploads is in use")
	}
	data, err := s.upload(r, want)
	if err != nil {
		return nil, "", err
	}
	adm.shrink(int64(len(data)))
	sum := sha256.Sum256(data)
	hdr, err := imageprep.Peek(data, s.cfg.Limits)
	if err != nil {
		return nil, "", fmt.Errorf("query image: %w", err)
	}
	if need := int64(len(data)) + hdr.DecodeBytes; need > s.cfg.MaxMemoryBytes {
		return nil, "", fmt.Errorf("%w: decoding this %dx%d %s takes %d MiB, more than this server's memory budget for uploads (%d MiB)",
			imageprep.ErrTooLarge, hdr.Width, hdr.Height, hdr.Format, need>>20, s.cfg.MaxMemoryBytes>>20)
	}
	if !adm.take(hdr.DecodeBytes) {
		return nil, "", s.busy("the memory budget for uploads is in use")
	}
	adm.setNative(hdr.NativeBytes())
	px, err := s.eng.Prepare(enc, data, nil)
	adm.release() // the encoded bytes and the pixels are garbage now
	if err != nil {
		return nil, "", fmt.Errorf("query image: %w", err)
	}
	v, err := s.eng.EmbedPrepared(r.Context(), enc, px)
	if err != nil {
		return nil, "", err
	}
	return v, hex.EncodeToString(sum[:]), nil
}

func (s *Server) busy(why string) error {
	return &apiError{code: http.StatusServiceUnavailable, retryAfter: 1, msg: "busy: " + why + "; retry"}
}

// admission is what one request holds of the memory budget, and how much
// of that is held by native code (libjpeg) outside the Go heap.
type admission struct {
	s      *Server
	held   int64
	native int64
}

func (a *admission) take(n int64) bool {
	if n <= 0 {
		return true
	}
	if !a.s.mem.TryAcquire(n) {
		return false
	}
	a.held += n
	a.s.admitted.Add(n)
	return true
}

// wait takes n, native of it outside the Go heap, waiting for the budget
// until ctx ends: for requests whose number is bounded otherwise (the
// thumbnail slots), so that a large one is not starved by a stream of
// small ones (the budget serves waiters first, in order).
func (a *admission) wait(ctx context.Context, n, native int64) error {
	if err := a.s.mem.Acquire(ctx, n); err != nil {
		return a.s.busy("the memory budget stayed in use until the deadline")
	}
	a.held += n
	a.s.admitted.Add(n)
	a.setNative(native)
	return nil
}

// setNative records how much of what a holds native code holds.
func (a *admission) setNative(n int64) {
	if d := n - a.native; d != 0 {
		a.native = n
		a.s.heapLimit(a.s.native.Add(d))
	}
}

// shrink gives back what is held beyond n.
func (a *admission) shrink(n int64) {
	if a.held > n {
		a.s.admitted.Add(n - a.held)
		a.s.mem.Release(a.held - n)
		a.held = n
	}
	if a.native > a.held {
		a.setNative(a.held)
	}
}

func (a *admission) release() { a.shrink(0) }

func (s *Server) searchObject(r *http.Request) (any, error) {
	start := time.Now()
	model, k, err := s.params(r)
	if err != nil {
		return nil, err
	}
	srch, err := s.searcher(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	uri, id, text := q.Get("uri"), q.Get("id"), q.Get("text")
	given := 0
	for _, v := range []string{uri, id, text} {
		if v != "" {
			given++
		}
	}
	var hits []search.Hit
	// The collection that answers is resolved once: every part of the
	// answer uses it.
	var col *vecstore.Collection
	pin := func(image string) error {
		col, err = srch.Resolve(r.Context(), image)
		if err == nil {
			srch = srch.In(col)
		}
		return err
	}
	switch {
	case given != 1:
		if q.Has("text") && text == "" {
			return nil, badRequest("text is empty: say what to look for")
		}
		return nil, badRequest("text, uri or id is required (one of them): a text to search by, or the indexed object whose vector is the query (or POST an image)")
	case text != "":
		if len(text) > s.cfg.MaxTextBytes {
			return nil, badRequest("text is %d bytes, over the %d-byte limit", len(text), s.cfg.MaxTextBytes)
		}
		if strings.TrimSpace(text) == "" {
			return nil, badRequest("text is only white space: say what to look for")
		}
		ts, ok := s.eng.TextFor(model)
		if !ok {
			return nil, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("no text model that pairs with %s is served here (text models: %s)",
				escape.Quoted(model), strings.Join(s.eng.TextModels(), ", "))}
		}
		if err = pin(ts.PairsWith.Name); err == nil {
			hits, err = srch.ByText(r.Context(), model, text, k)
		}
		model = ts.PairsWith.Name
	case uri != "":
		if err = pin(model); err == nil {
			hits, err = srch.ByObject(r.Context(), model, uri, k)
		}
	default:
		if err = pin(model); err == nil {
			hits, err = srch.ByID(r.Context(), model, id, k)
		}
	}
	if err != nil {
		return nil, err
	}
	return Response{Model: model, Collection: col.Name, ModelVersion: col.Version, K: k, TookMS: ms(time.Since(start)), Hits: hits}, nil
}

// searcher is the Searcher of a request: with prefix=P, only rows whose
// URI starts with P answer (the filter is built by vecstore, escaped).
func (s *Server) searcher(r *http.Request) (*search.Searcher, error) {
	p, err := prefixOf(r)
	if err != nil || p == "" {
		return s.search, err
	}
	return s.search.Under(p), nil
}

// prefixOf reads a request's prefix=P ("only under"), which every search
// and copy check takes.
func prefixOf(r *http.Request) (string, error) {
	p := r.URL.Query().Get("prefix")
	if len(p) > 1024 || strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return "", badRequest("prefix must be a URI prefix of at most 1024 characters without control characters")
	}
	return p, nil
}

// ModelInfo describes one served model. A text model's collection is the
// one of the image model it pairs with.
type ModelInfo struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // image | text
	Dim        int    `json:"dim"`
	Version    string `json:"version"`
	Collection string `json:"collection"`
	// TextModel names the text tower that searches this image model's
	// collection (GET /v1/search?model=NAME&text=...), when one is served.
	TextModel string          `json:"text_model,omitempty"`
	PairsWith *embed.ModelRef `json:"pairs_with,omitempty"`
}

func (s *Server) listModels(*http.Request) (any, error) {
	out := make([]ModelInfo, 0, len(s.names))
	for _, n := range append(append([]string(nil), s.names...), s.eng.TextModels()...) {
		sp, _ := s.eng.Spec(n)
		info := ModelInfo{Name: n, Kind: embed.KindImage, Dim: sp.Dim, Version: sp.Version, Collection: vecstore.CollectionName(n)}
		if sp.IsText() {
			info.Kind, info.PairsWith, info.Collection = embed.KindText, sp.PairsWith, vecstore.CollectionName(sp.PairsWith.Name)
		} else if ts, ok := s.eng.TextFor(n); ok {
			info.TextModel = ts.Name
		}
		out = append(out, info)
	}
	return map[string]any{"models": out}, nil
}

// upload reads the image from a raw body (of size bytes when its
// Content-Length is known) or from the multipart field "image", at most
// MaxBodyBytes.
func (s *Server) upload(r *http.Request, size int64) ([]byte, error) {
	body := http.MaxBytesReader(nil, r.Body, s.cfg.MaxBodyBytes)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		var data []byte
		var err error
		if r.ContentLength >= 0 {
			// One buffer of the declared size: no doubling copies.
			data = make([]byte, size)
			_, err = io.ReadFull(body, data)
		} else {
			data, err = io.ReadAll(body)
		}
		if err != nil {
			return nil, uploadErr(err)
		}
		if len(data) == 0 {
			return nil, badRequest("empty body: POST the image bytes, or a multipart form with an \"image\" file")
		}
		return data, nil
	}
	r.Body = body
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, badRequest("multipart body: %v", err)
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return nil, badRequest("multipart body has no \"image\" field")
		}
		if err != nil {
			return nil, uploadErr(err)
		}
		if p.FormName() != "image" {
			continue
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, uploadErr(err)
		}
		return data, nil
	}
}

func uploadErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: the upload is over the %d-byte limit", err, mbe.Limit)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The deadline passed while the body was still arriving: 504, as
		// for any request that is not done in time.
		return fmt.Errorf("reading the upload: %w", err)
	}
	return badRequest("reading the upload: %v", err)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
