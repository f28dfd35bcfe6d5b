package stack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

// MilvusLite is a milvus-lite server: Milvus's own engine behind its gRPC
// API, as a child process, with the limits of the lite server (index types
// FLAT, IVF_FLAT and AUTOINDEX only; no partitions, users or roles).
type MilvusLite struct {
	Addr string // host:port of the gRPC API
	*Process
}

// StartMilvusLite runs bin (milvus_lite/lib/milvus) with its database in
// dir, on addr (host:port; empty: a free loopback port), and returns once
// it can create and drop a collection: answering is not being ready, as
// milvus-lite accepts calls before its storage engine is initialised.
func StartMilvusLite(bin, dir, addr string) (*MilvusLite, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("milvus-lite server %s: %v (deploy/install/deps.sh milvus-lite installs it)", bin, err)
	}
	if addr != "" {
		return startMilvusAt(bin, dir, addr)
	}
	var m *MilvusLite
	err := StartOnFreePort(func(port int) error {
		var err error
		m, err = startMilvusAt(bin, dir, HostPort(port))
		return err
	})
	return m, err
}

func startMilvusAt(bin, dir, addr string) (*MilvusLite, error) {
	p, err := StartProcess("milvus", dir, MilvusLiteEnv(os.Environ(), filepath.Dir(bin)), bin, filepath.Join(dir, "milvus.db"), addr, "ERROR")
	if err != nil {
		return nil, err
	}
	ready := p.WaitReady(60*time.Second, func() error { return probeMilvus(addr, 2*time.Second) })
	if ready != nil {
		p.Kill()
		if PortTakenIn(p.LogTail(20)) {
			return nil, ErrPortTaken
		}
		return nil, fmt.Errorf("milvus-lite at %s: %w", addr, ready)
	}
	return &MilvusLite{Addr: addr, Process: p}, nil
}

// probeMilvus checks that the Milvus at addr makes and drops a collection
// within timeout: answering is not being ready.
func probeMilvus(addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: addr})
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return probeCollection(ctx, c)
}

func probeCollection(ctx context.Context, c *milvusclient.Client) error {
	const name = "embedfleet_ready_probe"
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("v").WithDataType(entity.FieldTypeFloatVector).WithDim(2))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema)); err != nil {
		return err
	}
	return c.DropCollection(ctx, milvusclient.NewDropCollectionOption(name))
}

// MilvusLiteEnv is env with what the milvus-lite server needs: its library
// folder, and, since it shares the machine with inference, two OpenMP
// threads, one OpenBLAS thread and a passive wait (its pools would
// otherwise take a thread per core and spin between searches), unless env
// already says otherwise.
func MilvusLiteEnv(env []string, libDir string) []string {
	out := append(slices.Clone(env), "LD_LIBRARY_PATH="+libDir)
	for _, kv := range []string{"OMP_NUM_THREADS=2", "OPENBLAS_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE"} {
		key := kv[:strings.IndexByte(kv, '=')+1]
		if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, key) }) {
			out = append(out, kv)
		}
	}
	return out
}
