package objstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

var keys = []string{"p/a.jpg", "p/b.PNG", "p/c.txt", "p/sub/d.jpg", "p/e.jpeg", "q/other.jpg", "p/skip-me.jpg"}

func listAll(t *testing.T, src objstore.Source, after string) []string {
	t.Helper()
	var got []string
	if err := src.List(context.Background(), after, func(o objstore.Object) error {
		if o.ETag == "" || o.Size <= 0 {
			t.Errorf("%s: etag %q size %d", o.Key, o.ETag, o.Size)
		}
		got = append(got, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func check(t *testing.T, src objstore.Source, prefix string) {
	t.Helper()
	want := []string{prefix + "a.jpg", prefix + "b.PNG", prefix + "e.jpeg", prefix + "sub/d.jpg"}
	if got := listAll(t, src, ""); !slices.Equal(got, want) {
		t.Fatalf("list = %v, want %v (sorted, images only, exclusions applied)", got, want)
	}
	if got := listAll(t, src, prefix+"b.PNG"); !slices.Equal(got, want[2:]) {
		t.Fatalf("list after b = %v, want %v", got, want[2:])
	}
	ctx := context.Background()
	data, err := src.Get(ctx, prefix+"a.jpg", 1<<20)
	if err != nil || string(data) != "content of p/a.jpg" {
		t.Fatalf("get = %q, %v", data, err)
	}
	if _, err := src.Get(ctx, prefix+"missing.jpg", 1<<20); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("get missing: %v, want ErrNotFound", err)
	}
	if _, err := src.Get(ctx, prefix+"a.jpg", 5); !errors.Is(err, objstore.ErrTooLarge) {
		t.Fatalf("get over the limit: %v, want ErrTooLarge", err)
	}
}

var filter = objstore.Filter{Exclude: []string{"skip-*"}}

func TestS3Source(t *testing.T) {
	t.Parallel()
	m := testenv.StartMinIO(t)
	ctx := context.Background()
	for _, k := range keys {
		body := "content of " + k
		if _, err := m.Client.PutObject(ctx, m.Bucket, k, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := objstore.S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true, PathStyle: true}
	src, err := objstore.Open("s3://"+m.Bucket+"/p/", cfg, filter)
	if err != nil {
		t.Fatal(err)
	}
	check(t, src, "p/")
	if src.ObjectURI("p/a.jpg") != "s3://"+m.Bucket+"/p/a.jpg" {
		t.Fatalf("object uri %s", src.ObjectURI("p/a.jpg"))
	}

	bad := cfg
	bad.SecretKey = "wrong"
	src, _ = objstore.Open("s3://"+m.Bucket+"/p/", bad, filter)
	_, err = src.Get(ctx, "p/a.jpg", 1<<20)
	if err == nil || errors.Is(err, objstore.ErrTransient) || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("wrong credentials: %v, want a permanent access-denied error", err)
	}
	if err := src.List(ctx, "", func(objstore.Object) error { return nil }); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("list with wrong credentials: %v", err)
	}

	m.Stop()
	src, _ = objstore.Open("s3://"+m.Bucket+"/p/", objstore.S3Config{Endpoint: m.Endpoint, AccessKey: "a", SecretKey: "b", Insecure: true, PathStyle: true, Attempts: 2}, filter)
	start := time.Now()
	_, err = src.Get(ctx, "p/a.jpg", 1<<20)
	if !errors.Is(err, objstore.ErrTransient) {
		t.Fatalf("get from a stopped server: %v, want ErrTransient", err)
	}
	t.Logf("unreachable after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

func TestLocalSource(t *testing.T) {
	dir := t.TempDir()
	for _, k := range keys {
		p := filepath.Join(dir, filepath.FromSlash(k))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("content of "+k), 0o644)
	}
	src, err := objstore.Open(filepath.Join(dir, "p"), objstore.S3Config{}, filter)
	if err != nil {
		t.Fatal(err)
	}
	// Keys of a local source are relative to its folder.
	want := []string{"a.jpg", "b.PNG", "e.jpeg", "sub/d.jpg"}
	if got := listAll(t, src, ""); !slices.Equal(got, want) {
		t.Fatalf("list = %v, want %v", got, want)
	}
	if _, err := src.Get(context.Background(), "../q/other.jpg", 1<<20); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("a key that climbs out of the folder: %v, want ErrNotFound", err)
	}
	if _, err := objstore.Open(filepath.Join(dir, "nope"), objstore.S3Config{}, filter); err == nil {
		t.Fatal("opened a missing folder")
	}
	if _, err := objstore.Open("s3://", objstore.S3Config{}, filter); err == nil {
		t.Fatal("opened s3:// without a bucket")
	}
	if _, err := objstore.Open(dir, objstore.S3Config{}, objstore.Filter{Include: []string{"[bad"}}); err == nil {
		t.Fatal("accepted a malformed pattern")
	}
}
