package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/embedfleet/embedfleet/shared/stack"
)

// Milvus is a milvus-lite server process: Milvus's own engine behind its
// gRPC API, with the limits of the lite server (index types FLAT, IVF_FLAT
// and AUTOINDEX only; no partitions, users or roles).
type Milvus struct {
	Addr   string // host:port of the gRPC API
	Client *milvusclient.Client

	proc *stack.Process
	bin  string
	dir  string
}

// StartMilvus starts milvus-lite on a free loopback port with its database
// file in the test's temp dir, waits until it answers, and stops it when the
// test ends.
func StartMilvus(t testing.TB) *Milvus {
	t.Helper()
	skipShort(t, "milvus-lite")
	m := &Milvus{bin: Binary(t, EnvMilvusBin), dir: t.TempDir()}
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

func (m *Milvus) start() error {
	ml, err := stack.StartMilvusLite(m.bin, m.dir, m.Addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: m.Addr})
	if err != nil {
		ml.Kill()
		return err
	}
	if m.Client != nil {
		_ = m.Client.Close(ctx)
	}
	m.Client, m.proc = c, ml.Process
	return nil
}

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
