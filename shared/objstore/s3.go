package objstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/embedfleet/embedfleet/shared/retry"
)

// S3Config says how to reach an S3-compatible service. Credentials come
// from AccessKey/SecretKey, else from the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, or MINIO_ROOT_USER/PASSWORD), else
// from the shared credentials file. They are never logged.
type S3Config struct {
	Endpoint  string // host:port; default s3.amazonaws.com
	Region    string
	AccessKey string
	SecretKey string
	Insecure  bool   // plain HTTP (MinIO in a cluster, tests)
	CAFile    string // PEM of CAs to trust for HTTPS, besides the system's
	PathStyle bool   // path-style addressing (MinIO); default virtual-host where the endpoint supports it
	// Attempts for transient read failures (default 4).
	Attempts int
	// IdleTimeout fails a read (a transient failure, tried again) when no
	// byte arrives for this long; default 1 min.
	IdleTimeout time.Duration
}

type s3source struct {
	c      *minio.Client
	bucket string
	prefix string
	f      Filter
	cfg    S3Config
}

func newS3(bucket, prefix string, cfg S3Config, f Filter) (*s3source, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = "s3.amazonaws.com"
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Minute
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 4
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{},
		})
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	opts := &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, BucketLookup: lookup}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("objstore: s3 CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("objstore: s3 CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		opts.Transport = tr
	}
	c, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("objstore: s3 endpoint %s: %w", cfg.Endpoint, err)
	}
	return &s3source{c: c, bucket: bucket, prefix: prefix, f: f, cfg: cfg}, nil
}

func (s *s3source) URI() string                 { return "s3://" + s.bucket + "/" + s.prefix }
func (s *s3source) ObjectURI(key string) string { return "s3://" + s.bucket + "/" + key }
func (s *s3source) RowPrefix() string           { return s.URI() }

func (s *s3source) KeyOf(uri string) (string, bool) {
	rest, ok := strings.CutPrefix(uri, "s3://"+s.bucket+"/")
	return rest, ok && rest != ""
}

// retry runs op up to Attempts times while it fails with ErrTransient
// (retry.Do: doubling jittered backoff from 100 ms, bounded by ctx).
func (s *s3source) retry(ctx context.Context, op func() error) error {
	return retry.Do(ctx, retry.Policy{Attempts: s.cfg.Attempts}, func(err error) bool { return errors.Is(err, ErrTransient) },
		func(context.Context) error { return op() })
}

func (s *s3source) Stat(ctx context.Context, key string) (bool, error) {
	var exists bool
	err := s.retry(ctx, func() error {
		_, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
		if err != nil {
			err = s.classify("stat "+s.ObjectURI(key), err)
			if errors.Is(err, ErrNotFound) {
				exists = false
				return nil
			}
			return err
		}
		exists = true
		return nil
	})
	return exists, err
}

func (s *s3source) List(ctx context.Context, after string, fn func(Object) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine if fn returns early
	opts := minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true, StartAfter: after}
	for o := range s.c.ListObjects(ctx, s.bucket, opts) {
		if o.Err != nil {
			return s.classify("list "+s.URI(), o.Err)
		}
		if strings.HasSuffix(o.Key, "/") || !s.f.Match(o.Key) {
			continue
		}
		if err := fn(Object{Key: o.Key, ETag: o.ETag, Size: o.Size}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *s3source) Get(ctx context.Context, key string, max int64) ([]byte, error) {
	var data []byte
	err := s.retry(ctx, func() error {
		ctx, idle, stop := WatchIdle(ctx, s.cfg.IdleTimeout, "get "+s.ObjectURI(key))
		defer stop()
		fail := func(err error) error {
			if c := Stalled(ctx); c != nil {
				return fmt.Errorf("%w: %w", ErrTransient, c)
			}
			return s.classify("get "+s.ObjectURI(key), err)
		}
		obj, err := s.c.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return fail(err)
		}
		defer obj.Close()
		st, err := obj.Stat()
		if err != nil {
			return fail(err)
		}
		b, err := readSized(idle.Reader(obj), st.Size, max)
		if errors.Is(err, ErrTooLarge) {
			return fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, s.ObjectURI(key), max)
		}
		if err != nil {
			return fail(err)
		}
		data = b
		return nil
	})
	return data, err
}

// classify maps an S3 or network error to ErrNotFound, ErrTransient or a
// plain (permanent) error.
func (s *s3source) classify(op string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.StatusCode == http.StatusNotFound:
		if resp.Code == "NoSuchBucket" {
			return fmt.Errorf("objstore: %s: bucket %s does not exist", op, s.bucket)
		}
		return fmt.Errorf("%w: %s", ErrNotFound, op)
	case resp.StatusCode == http.StatusForbidden || resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return fmt.Errorf("objstore: %s: %w (%s): check the credentials", op, ErrAccessDenied, resp.Code)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%w: %s: %v", ErrTransient, op, err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "connection refused") || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: %v", ErrTransient, op, err)
	}
	return fmt.Errorf("objstore: %s: %w", op, err)
}
