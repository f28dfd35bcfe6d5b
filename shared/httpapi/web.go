package httpapi

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/imageprep"
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
// but the page, its files and the health checks needs it (/metrics too),
// and each request refused for the lack of it is counted.
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
			s.requests.WithLabelValues(s.routeName(r), "401").Inc()
			return
		}
		next.ServeHTTP(w, r)
	})
}

// routeName is the metrics label of a request's route; "other" for a path
// the server does not serve (so that a client cannot make new labels).
func (s *Server) routeName(r *http.Request) string {
	if n, ok := s.routes[r.Method+" "+r.URL.Path]; ok {
		return n
	}
	return "other"
}

// public paths need no token: the page itself (it asks for the token), its
// files and the health checks.
func public(p string) bool {
	return p == "/" || strings.HasPrefix(p, "/static/") || p == "/healthz" || p == "/readyz"
}

// authorized checks the Authorization header: the scheme is
// case-insensitive (RFC 9110), the token compared in constant time.
func (s *Server) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimLeft(token, " ")), []byte(s.cfg.AuthToken)) == 1
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
}

// rowOf finds the row of (model, id): objects are read only for rows that
// are in a collection, never for a key a client names.
func (s *Server) rowOf(r *http.Request) (vecstore.Row, error) {
	ctx := r.Context()
	q := r.URL.Query()
	model, id := q.Get("model"), q.Get("id")
	if model == "" || id == "" {
		return vecstore.Row{}, badRequest("model and id are required (an id from a search hit)")
	}
	if _, ok := s.eng.Spec(model); !ok {
		return vecstore.Row{}, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("model %s is not served here", clip(model))}
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
		return vecstore.Row{}, &apiError{code: http.StatusNotFound, msg: fmt.Sprintf("no row %s in %s", clip(id), col.Name)}
	}
	return row, nil
}

// readObject reads the object of row under the memory budget: its size
// (as indexed; the limit on objects when unknown) is admitted before the
// read, and the read takes no more than that. The caller releases adm.
func (s *Server) readObject(ctx context.Context, adm *admission, row vecstore.Row) ([]byte, error) {
	size := row.Size
	if size <= 0 || size > s.cfg.Limits.MaxBytes {
		size = s.cfg.Limits.MaxBytes
	}
	if size > s.cfg.MaxMemoryBytes {
		return nil, fmt.Errorf("%w: the object is %d bytes, more than this server's memory budget (%d MiB)",
			imageprep.ErrTooLarge, size, s.cfg.MaxMemoryBytes>>20)
	}
	if !adm.take(size) {
		return nil, s.busy("the memory budget is in use")
	}
	data, err := s.cfg.ReadObject(ctx, row.URI, size)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", escape.Value(row.URI), err)
	}
	adm.shrink(int64(len(data)))
	return data, nil
}

// thumbnail answers GET /v1/thumbnail?model=M&id=ID&size=S: the object of
// a row, decoded within the upload limits, fitted into S x S, as JPEG.
func (s *Server) thumbnail(r *http.Request) (any, error) {
	size := defaultThumb
	if v := r.URL.Query().Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < minThumb || n > maxThumb {
			return nil, badRequest("size must be an integer from %d to %d, got %s", minThumb, maxThumb, escape.Quoted(v))
		}
		size = n
	}
	row, err := s.rowOf(r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(row.URI + "\x00" + row.ETag + "\x00" + strconv.Itoa(size)))
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	header := map[string]string{"ETag": etag, "Cache-Control": "private, max-age=3600"}
	if r.Header.Get("If-None-Match") == etag {
		return &raw{code: http.StatusNotModified, header: header}, nil
	}
	body, ok := s.thumbs.get(etag)
	if !ok {
		body, err = s.makeThumbnail(r.Context(), row, size)
		if err != nil {
			return nil, err
		}
		s.thumbs.put(etag, body)
	}
	header["Content-Type"] = "image/jpeg"
	return &raw{code: http.StatusOK, header: header, body: body}, nil
}

// makeThumbnail reads and decodes a row's object under the memory budget:
// its encoded size first, then what its header says the thumbnail's decode
// holds (imageprep.Header.ThumbnailBytes).
func (s *Server) makeThumbnail(ctx context.Context, row vecstore.Row, size int) ([]byte, error) {
	select {
	case s.thumbSlots <- struct{}{}:
		defer func() { <-s.thumbSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	adm := &admission{s: s}
	defer adm.release()
	data, err := s.readObject(ctx, adm, row)
	if err != nil {
		return nil, err
	}
	hdr, err := imageprep.Peek(data, s.cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", escape.Value(row.URI), err)
	}
	need := hdr.ThumbnailBytes(size)
	if int64(len(data))+need > s.cfg.MaxMemoryBytes {
		return nil, fmt.Errorf("%w: a thumbnail of this %dx%d %s takes %d MiB, more than this server's memory budget (%d MiB)",
			imageprep.ErrTooLarge, hdr.Width, hdr.Height, hdr.Format, (int64(len(data))+need)>>20, s.cfg.MaxMemoryBytes>>20)
	}
	// Thumbnails are at most ThumbnailConcurrency at once: one waits for
	// its share rather than being shed, so large ones are not starved.
	if err := adm.wait(ctx, need, hdr.NativeBytes()); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	thumb, err := imageprep.Thumbnail(data, size, s.cfg.Limits, s.cfg.DecoderOptions...)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", escape.Value(row.URI), err)
	}
	return thumb, nil
}

// imageTypes are the media types of the formats embedfleet decodes.
var imageTypes = map[string]string{"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp", "tiff": "image/tiff"}

// original answers GET /v1/original?model=M&id=ID: the bytes of a row's
// object, when they are an image embedfleet decodes, under its type. The
// bytes stay admitted against the memory budget until they are written.
func (s *Server) original(r *http.Request) (any, error) {
	row, err := s.rowOf(r)
	if err != nil {
		return nil, err
	}
	adm := &admission{s: s}
	data, err := s.readObject(r.Context(), adm, row)
	if err != nil {
		adm.release()
		return nil, err
	}
	ct, ok := imageTypes[imageprep.Sniff(data)]
	if !ok {
		adm.release()
		return nil, fmt.Errorf("%w: %s is not an image this server shows", imageprep.ErrUnsupported, escape.Value(row.URI))
	}
	return &raw{code: http.StatusOK, body: data, release: adm.release,
		header: map[string]string{"Content-Type": ct, "Cache-Control": "private, max-age=3600"}}, nil
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
