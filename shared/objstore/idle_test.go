package objstore

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestS3ReadStalls: an S3 endpoint that sends an object's headers and then
// a byte now and then is cut off by the idle timeout (a transient failure,
// so a worker tries the job again later), not waited on forever. The
// endpoint is a stand-in: MinIO cannot be made to stall.
func TestS3ReadStalls(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "1000")
			return
		}
		w.Header().Set("Content-Length", "1000")
		w.Header().Set("ETag", `"e"`)
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		for i := 0; i < 1000 && r.Context().Err() == nil; i++ {
			_, _ = w.Write([]byte{0xff})
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}
	}))
	defer srv.Close()
	src, err := Open("s3://bucket/", S3Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Insecure: true, PathStyle: true,
		AccessKey: "a", SecretKey: "b", Attempts: 1, IdleTimeout: 500 * time.Millisecond}, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = src.Get(context.Background(), "slow.jpg", 1<<20)
	if took := time.Since(start); !errors.Is(err, ErrTransient) || !errors.Is(err, ErrStalled) || took > 5*time.Second {
		t.Fatalf("a stalling read: %v after %v, want ErrTransient and ErrStalled within seconds", err, took)
	}
}
