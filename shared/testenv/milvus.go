package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

// Milvus is a milvus-lite server process: Milvus's own engine behind its
// gRPC API, with the limits of the lite server (index types FLAT, IVF_FLAT
// and AUTOINDEX only; no partitions, users or roles).
type Milvus struct {
	Addr   string // host:port of the gRPC API
	Client *milvusclient.Client

	proc *process
}

// StartMilvus starts milvus-lite on a free loopback port with its database
// file in the test's temp dir, waits until it answers, and stops it when the
// test ends.
func StartMilvus(t testing.TB) *Milvus {
	t.Helper()
	bin := Binary(t, EnvMilvusBin)
	dir := t.TempDir()
	m := &Milvus{}
	err := startOnFreePort(func(port int) error {
		m.Addr = hostPort(port)
		p, err := startProcess("milvus", dir, []string{"LD_LIBRARY_PATH=" + filepath.Dir(bin)},
			bin, filepath.Join(dir, "milvus.db"), m.Addr, "ERROR")
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
