package httpapi

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// The search page: static files embedded in the binary, nothing fetched
// at run time.
//
//go:embed web
var webFiles embed.FS

// contentSecurityPolicy allows the page's own script, style and images
// (thumbnails arrive as blobs, fetched with the bearer token), and nothing
// else: no inline script, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Thumbnail sizes: the longer side, in pixels.
const (
	minThumb     = 32
	maxThumb     = 1024
	defaultThumb = 256
)

// securityHeaders wraps the whole server: every answer forbids sniffing,
// framing and referrers; the page gets its CSP; with a token, every route
// but the page, its files and the health checks needs it.
func (s *Server) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		if s.cfg.AuthToken != "" && !public(r.URL.Path) && !s.authorized(r) {
			h.Set("WWW-Authenticate", `Bearer realm="embedfleet"`)
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"this server needs a bearer token (Authorization: Bearer TOKEN)","status":401}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// public paths need no token: the page itself (it asks for the token), its
// files and the health checks.
func public(p string) bool {
	return p == "/" || strings.HasPrefix(p, "/static/") || p == "/healthz" || p == "/readyz"
}

func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AuthToken)) == 1
}

func (s *Server) routeWeb() {
	static, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(static)
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, err := webFiles.ReadFile("web/index.html")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
	})
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", files))
	s.mux.HandleFunc("GET /v1/thumbnail", s.thumbnail)
	s.mux.HandleFunc("GET /v1/original", s.original)
}

// rowOf finds the row of (model, id): objects are read only for rows that
// are in a collection, never for a key a client names.
func (s *Server) rowOf(ctx context.Context, r *http.Request) (vecstore.Row, error) {
	q := r.URL.Query()
	model, id := q.Get("model"), q.Get("id")
	if model == "" || id == "" {
		return vecstore.Row{}, badRequest("model and id are required (an id from a search hit)")
	}
	if _, ok := s.eng.Spec(model); !ok {
		return vecstore.Row{}, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("model %q is not served here", model)}
	}
	if s.cfg.ReadObject == nil {
		return vecstore.Row{}, &apiError{code: http.StatusNotFound, msg: "this server has no access to the indexed objects (serve needs the worker's S3 settings)"}
	}
	col, err := s.cfg.Store.Open(ctx, model)
	if err != nil {
		return vecstore.Row{}, err
	}
	row, found, err := col.Get(ctx, id)
	if err != nil {
		return vecstore.Row{}, err
	}
	if !found {
		return vecstore.Row{}, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("no row %q in %s", id, col.Name)}
	}
	return row, nil
}

// writeErr answers err as the JSON routes do.
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	code := s.status(err)
	if errors.Is(err, objstore.ErrNotFound) {
		code = http.StatusNotFound
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]any{"error": err.Error(), "status": code})
	_, _ = w.Write(append(b, '\n'))
}

// thumbnail answers GET /v1/thumbnail?model=M&id=ID&size=S: the object of
// a row, decoded within the upload limits, fitted into S x S, as JPEG.
func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	size := defaultThumb
	if v := r.URL.Query().Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < minThumb || n > maxThumb {
			s.writeErr(w, badRequest("size must be an integer from %d to %d, got %q", minThumb, maxThumb, v))
			return
		}
		size = n
	}
	row, err := s.rowOf(ctx, r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	sum := sha256.Sum256([]byte(row.URI + "\x00" + row.ETag + "\x00" + strconv.Itoa(size)))
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "private, max-age=3600")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body, ok := s.thumbs.get(etag)
	if !ok {
		body, err = s.makeThumbnail(ctx, row.URI, size)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		s.thumbs.put(etag, body)
	}
	w.Header().Set("Content-Type", "image/jpeg")
	_, _ = w.Write(body)
}

func (s *Server) makeThumbnail(ctx context.Context, uri string, size int) ([]byte, error) {
	select {
	case s.thumbSlots <- struct{}{}:
		defer func() { <-s.thumbSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	data, err := s.cfg.ReadObject(ctx, uri, s.cfg.Limits.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", uri, err)
	}
	thumb, err := imageprep.Thumbnail(data, size, s.cfg.Limits, s.cfg.DecoderOptions...)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", uri, err)
	}
	return thumb, nil
}

// original answers GET /v1/original?model=M&id=ID: the bytes of a row's
// object, when they are an image embedfleet decodes, under its type.
func (s *Server) original(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	row, err := s.rowOf(ctx, r)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	data, err := s.cfg.ReadObject(ctx, row.URI, s.cfg.Limits.MaxBytes)
	if err != nil {
		s.writeErr(w, fmt.Errorf("read %s: %w", row.URI, err))
		return
	}
	format := imageprep.Sniff(data)
	types := map[string]string{"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp", "tiff": "image/tiff"}
	ct, ok := types[format]
	if !ok {
		s.writeErr(w, fmt.Errorf("%w: %s is not an image this server shows", imageprep.ErrUnsupported, row.URI))
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "private, max-age=3600")
	_, _ = w.Write(data)
}

// thumbCache keeps encoded thumbnails, least recently used out first, at
// most max bytes in all.
type thumbCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	order *list.List // of *thumbEntry, most recent first
	byKey map[string]*list.Element
}

type thumbEntry struct {
	key  string
	body []byte
}

func newThumbCache(max int64) *thumbCache {
	return &thumbCache{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

func (c *thumbCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*thumbEntry).body, true
}

func (c *thumbCache) put(key string, body []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int64(len(body)) > c.max {
		return
	}
	if e, ok := c.byKey[key]; ok {
		c.bytes -= int64(len(e.Value.(*thumbEntry).body))
		c.order.Remove(e)
	}
	c.byKey[key] = c.order.PushFront(&thumbEntry{key: key, body: body})
	c.bytes += int64(len(body))
	for c.bytes > c.max {
		last := c.order.Back()
		ent := last.Value.(*thumbEntry)
		c.order.Remove(last)
		delete(c.byKey, ent.key)
		c.bytes -= int64(len(ent.body))
	}
}

func (c *thumbCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// ThumbnailCacheBytes is the size of the thumbnails held now.
func (s *Server) ThumbnailCacheBytes() int64 { return s.thumbs.size() }
