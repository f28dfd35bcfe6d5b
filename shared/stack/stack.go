package stack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// StartNATS starts a NATS server with JetStream in this process, on a free
// loopback port, with its streams stored in storeDir.
func StartNATS(storeDir string) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: storeDir, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats: the in-process server was not ready after 10 s")
	}
	return ns, nil
}

// Config of a Stack.
type Config struct {
	DataDir    string // NATS's streams and milvus-lite's database go here
	MilvusBin  string // the milvus-lite server binary
	MilvusAddr string // use this Milvus instead of starting milvus-lite
	Streams    bus.StreamOptions
}

// Stack is the whole system's servers in one machine: an in-process NATS
// JetStream with embedfleet's topology made, and milvus-lite (or the Milvus
// at Config.MilvusAddr), with clients connected.
type Stack struct {
	NATS     *server.Server
	Conn     *nats.Conn
	JS       jetstream.JetStream
	Topology bus.Topology
	Store    *vecstore.Store
	Milvus   *MilvusLite // nil when Config.MilvusAddr was given
}

// Start stands the stack up; Close takes it down. On error nothing is left
// running.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	ns, err := StartNATS(filepath.Join(cfg.DataDir, "nats"))
	if err != nil {
		return nil, err
	}
	s := &Stack{NATS: ns}
	if s.Conn, s.JS, err = bus.Connect(bus.Config{URL: ns.ClientURL(), Name: "embedfleet-embedded"}); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.Topology.Ensure(ctx, s.JS, cfg.Streams); err != nil {
		s.Close()
		return nil, err
	}
	addr := cfg.MilvusAddr
	if addr == "" {
		if s.Milvus, err = StartMilvusLite(cfg.MilvusBin, cfg.DataDir, ""); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w (or give the address of a running Milvus)", err)
		}
		addr = s.Milvus.Addr
	}
	if s.Store, err = vecstore.Connect(ctx, vecstore.Config{Address: addr}); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close disconnects and stops what Start started, milvus-lite within 5 s.
func (s *Stack) Close() {
	if s.Store != nil {
		_ = s.Store.Close(context.Background())
	}
	if s.Milvus != nil {
		s.Milvus.Stop(5 * time.Second)
	}
	if s.Conn != nil {
		s.Conn.Close()
	}
	s.NATS.Shutdown()
	s.NATS.WaitForShutdown()
}
