package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/stack"
)

// Milvus is a Milvus server process for a test: milvus-lite (Milvus's own
// engine behind its gRPC API, with the limits of the lite server: index
// types FLAT, IVF_FLAT and AUTOINDEX only; no partitions, users, roles or
// aliases), or the real Milvus server, standalone, as users run it.
type Milvus struct {
	Addr    string // host:port of the gRPC API
	Client  *milvusclient.Client
	Backend string // BackendLite or BackendServer

	proc   *stack.Process
	server *stack.MilvusServer
	bin    string
	dir    string
}

// The Milvus backends a test can run on.
const (
	BackendLite   = "lite"
	BackendServer = "server"
)

// EnvTestMilvus chooses the backend of StartMilvus: lite (the default) or
// server. `make test` runs the packages that talk to Milvus on both.
const EnvTestMilvus = "EMBEDFLEET_TEST_MILVUS"

// MilvusBackend is the backend StartMilvus starts: EMBEDFLEET_TEST_MILVUS.
func MilvusBackend() string {
	if os.Getenv(EnvTestMilvus) == BackendServer {
		return BackendServer
	}
	return BackendLite
}

// StartMilvus starts the backend EMBEDFLEET_TEST_MILVUS names (milvus-lite
// by default) on free loopback ports with its data in the test's temp dir,
// waits until it answers, and stops it when the test ends.
func StartMilvus(t testing.TB) *Milvus {
	t.Helper()
	if MilvusBackend() == BackendServer {
		return StartMilvusServer(t)
	}
	skipShort(t, "milvus-lite")
	m := &Milvus{bin: Binary(t, EnvMilvusBin), dir: t.TempDir(), Backend: BackendLite}
	err := stack.StartOnFreePort(func(port int) error {
		m.Addr = stack.HostPort(port)
		return m.start()
	})
	if err != nil {
		t.Fatalf("testenv: milvus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.Client.Close(ctx)
		m.proc.Stop(5 * time.Second)
	})
	return m
}

// StartMilvusServer starts the real Milvus server (standalone) whatever
// EMBEDFLEET_TEST_MILVUS says: for the tests of what only a server has
// (aliases, ANN indexes, consistency levels).
func StartMilvusServer(t testing.TB) *Milvus {
	t.Helper()
	skipShort(t, "milvus server")
	m := &Milvus{bin: Binary(t, EnvMilvusServerHome), dir: t.TempDir(), Backend: BackendServer}
	srv, err := stack.StartMilvusServer(m.bin, m.dir)
	if err != nil {
		t.Fatalf("testenv: milvus server: %v", err)
	}
	m.server, m.Addr = srv, srv.Addr
	if err := m.connect(srv.Process); err != nil {
		srv.Kill()
		t.Fatalf("testenv: milvus server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.Client.Close(ctx)
		m.proc.Stop(10 * time.Second)
	})
	return m
}

func (m *Milvus) start() error {
	if m.server != nil {
		if err := m.server.Restart(); err != nil {
			return err
		}
		return m.connect(m.server.Process)
	}
	ml, err := stack.StartMilvusLite(m.bin, m.dir, m.Addr)
	if err != nil {
		return err
	}
	if err := m.connect(ml.Process); err != nil {
		ml.Kill()
		return err
	}
	return nil
}

// connect makes the test's client of the process p now serving at m.Addr.
func (m *Milvus) connect(p *stack.Process) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: m.Addr})
	if err != nil {
		return err
	}
	if m.Client != nil {
		_ = m.Client.Close(ctx)
	}
	m.Client, m.proc = c, p
	return nil
}

// Kill ends the server with SIGKILL, as a crash would; Restart brings it
// back.
func (m *Milvus) Kill() { m.proc.Kill() }

// Restart starts the server again after Stop, on the same port and
// database file, as an outage that ends would.
func (m *Milvus) Restart(t testing.TB) {
	t.Helper()
	if !m.proc.Exited() {
		t.Fatal("testenv: Restart of a milvus that is still running")
	}
	if err := m.start(); err != nil {
		t.Fatalf("testenv: milvus restart: %v", err)
	}
}

// Ping checks that the server answers an API call. Its error names the
// server.
func (m *Milvus) Ping(ctx context.Context) error {
	if err := stack.DialCheck(m.Addr); err != nil {
		return fmt.Errorf("milvus at %s: %w", m.Addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := m.Client.ListCollections(ctx, milvusclient.NewListCollectionOption()); err != nil {
		return fmt.Errorf("milvus at %s: %w", m.Addr, err)
	}
	return nil
}

// Stop ends the server now, as an outage would; later calls fail.
func (m *Milvus) Stop() { m.proc.Stop(5 * time.Second) }

// TLSFront serves TLS on a new loopback port with a certificate from ca and
// forwards each connection, decrypted, to the milvus-lite server: Milvus as
// a client sees it behind a TLS-terminating proxy or with tls enabled. It
// offers ALPN h2, as gRPC requires. It returns the front's host:port.
func (m *Milvus) TLSFront(t testing.TB, ca *CA) string {
	t.Helper()
	certFile, keyFile := ca.Issue(t, "milvus")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", m.Addr)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return l.Addr().String()
}
