package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

// Milvus is a milvus-lite server process: Milvus's own engine behind its
// gRPC API, with the limits of the lite server (index types FLAT, IVF_FLAT
// and AUTOINDEX only; no partitions, users or roles).
type Milvus struct {
	Addr   string // host:port of the gRPC API
	Client *milvusclient.Client

	proc *process
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
	err := startOnFreePort(func(port int) error {
		m.Addr = hostPort(port)
		return m.start()
	})
	if err != nil {
		t.Fatalf("testenv: milvus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.Client.Close(ctx)
		m.proc.stop(5 * time.Second)
	})
	return m
}

func (m *Milvus) start() error {
	p, err := startProcess("milvus", m.dir, []string{"LD_LIBRARY_PATH=" + filepath.Dir(m.bin)},
		m.bin, filepath.Join(m.dir, "milvus.db"), m.Addr, "ERROR")
	if err != nil {
		return err
	}
	ready := p.waitReady(60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: m.Addr})
		if err != nil {
			return err
		}
		// Answering is not being ready: milvus-lite can accept calls
		// before its storage engine is initialised ("Mmap manager has not
		// been init"). Create and drop a collection to be sure.
		if err := probeCollection(ctx, c); err != nil {
			_ = c.Close(ctx)
			return err
		}
		if m.Client != nil {
			_ = m.Client.Close(ctx)
		}
		m.Client = c
		return nil
	})
	if ready != nil {
		p.kill()
		if portTakenIn(p.logTail(20)) {
			return errPortTaken
		}
		return ready
	}
	m.proc = p
	return nil
}

// Restart starts the server again after Stop, on the same port and
// database file, as an outage that ends would.
func (m *Milvus) Restart(t testing.TB) {
	t.Helper()
	if !m.proc.exited() {
		t.Fatal("testenv: Restart of a milvus that is still running")
	}
	if err := m.start(); err != nil {
		t.Fatalf("testenv: milvus restart: %v", err)
	}
}

// Ping checks that the server answers an API call. Its error names the
// server.
func (m *Milvus) Ping(ctx context.Context) error {
	if err := dialCheck(m.Addr); err != nil {
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
func (m *Milvus) Stop() { m.proc.stop(5 * time.Second) }

func probeCollection(ctx context.Context, c *milvusclient.Client) error {
	const name = "testenv_ready_probe"
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("v").WithDataType(entity.FieldTypeFloatVector).WithDim(2))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema)); err != nil {
		return err
	}
	return c.DropCollection(ctx, milvusclient.NewDropCollectionOption(name))
}

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
