package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/embedfleet/embedfleet/shared/stack"
)

// MinIO is a MinIO server process with a bucket made for the test.
type MinIO struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Bucket    string // created empty for this test
	Client    *minio.Client
	TLS       bool // serving HTTPS with a certificate from the CA given to WithMinIOTLS

	proc      *stack.Process
	transport *http.Transport
}

// MinIOOption configures the MinIO server.
type MinIOOption func(m *MinIO, certsDir string) error

// WithMinIOTLS serves HTTPS with a certificate issued by ca.
func WithMinIOTLS(t testing.TB, ca *CA) MinIOOption {
	cert, key := ca.Issue(t, "minio")
	return func(m *MinIO, certsDir string) error {
		for src, dst := range map[string]string{cert: "public.crt", key: "private.key"} {
			b, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(certsDir, dst), b, 0o600); err != nil {
				return err
			}
		}
		pem, err := os.ReadFile(ca.CertFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		m.TLS = true
		m.transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		return nil
	}
}

func (m *MinIO) scheme() string {
	if m.TLS {
		return "https://"
	}
	return "http://"
}

func (m *MinIO) httpClient() *http.Client {
	if m.transport != nil {
		return &http.Client{Transport: m.transport}
	}
	return http.DefaultClient
}

// StartMinIO starts a MinIO server on a free loopback port with its data in
// the test's temp dir, waits for its health endpoint, creates a fresh bucket
// and stops the server when the test ends.
func StartMinIO(t testing.TB, opts ...MinIOOption) *MinIO {
	t.Helper()
	skipShort(t, "MinIO")
	bin := Binary(t, EnvMinIOBin)
	dir := t.TempDir()
	m := &MinIO{AccessKey: "embedfleet-test", SecretKey: "embedfleet-test-secret"}
	certs := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		if err := o(m, certs); err != nil {
			t.Fatalf("testenv: minio: %v", err)
		}
	}
	err := stack.StartOnFreePort(func(port int) error {
		console, err := stack.FreePort()
		if err != nil {
			return err
		}
		m.Endpoint = stack.HostPort(port)
		p, err := stack.StartProcess("minio", dir, []string{
			"MINIO_ROOT_USER=" + m.AccessKey,
			"MINIO_ROOT_PASSWORD=" + m.SecretKey,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
		}, bin, "server", dir+"/data", "--quiet", "--certs-dir", certs, "--address", m.Endpoint, "--console-address", stack.HostPort(console))
		if err != nil {
			return err
		}
		if err := p.WaitReady(60*time.Second, func() error { return m.ping(context.Background()) }); err != nil {
			p.Kill()
			if stack.PortTakenIn(p.LogTail(20)) {
				return stack.ErrPortTaken
			}
			return err
		}
		m.proc = p
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: minio: %v", err)
	}
	t.Cleanup(func() { m.proc.Stop(5 * time.Second) })

	mopts := &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""), Secure: m.TLS}
	if m.transport != nil {
		mopts.Transport = m.transport
	}
	m.Client, err = minio.New(m.Endpoint, mopts)
	if err != nil {
		t.Fatalf("testenv: minio client for %s: %v", m.Endpoint, err)
	}
	m.Bucket = m.NewBucket(t)
	return m
}

// NewBucket creates another empty bucket with a name unique to the test.
func (m *MinIO) NewBucket(t testing.TB) string {
	t.Helper()
	name := BucketName(t, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("testenv: minio at %s: make bucket %s: %v", m.Endpoint, name, err)
	}
	return name
}

// Ping checks that the server is alive. Its error names the server.
func (m *MinIO) Ping(ctx context.Context) error {
	if err := stack.DialCheck(m.Endpoint); err != nil {
		return fmt.Errorf("minio at %s: %w", m.Endpoint, err)
	}
	if err := m.ping(ctx); err != nil {
		return fmt.Errorf("minio at %s: %w", m.Endpoint, err)
	}
	return nil
}

func (m *MinIO) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.scheme()+m.Endpoint+"/minio/health/live", nil)
	if err != nil {
		return err
	}
	resp, err := m.httpClient().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check answered %s", resp.Status)
	}
	return nil
}

// Stop ends the server now, as an outage would; later calls fail.
func (m *MinIO) Stop() { m.proc.Stop(5 * time.Second) }
