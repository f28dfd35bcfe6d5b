package stack

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
}

// Stack is the servers of the whole system in one machine: an in-process
// NATS JetStream and milvus-lite (or the Milvus at Config.MilvusAddr).
// Clients connect to NATSURL and MilvusAddr (cmd/embedfleet's dev and bench
// then make the topology and open the store).
type Stack struct {
	NATS       *server.Server
	NATSURL    string
	Milvus     *MilvusLite // nil when Config.MilvusAddr was given
	MilvusAddr string
}

// Start stands the servers up; Close takes them down. On error nothing is
// left running.
func Start(cfg Config) (*Stack, error) {
	ns, err := StartNATS(filepath.Join(cfg.DataDir, "nats"))
	if err != nil {
		return nil, err
	}
	s := &Stack{NATS: ns, NATSURL: ns.ClientURL(), MilvusAddr: cfg.MilvusAddr}
	if s.MilvusAddr == "" {
		if s.Milvus, err = StartMilvusLite(cfg.MilvusBin, cfg.DataDir, ""); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w (or give the address of a running Milvus)", err)
		}
		s.MilvusAddr = s.Milvus.Addr
	}
	return s, nil
}

// Close stops what Start started, milvus-lite within 5 s.
func (s *Stack) Close() {
	if s.Milvus != nil {
		s.Milvus.Stop(5 * time.Second)
	}
	s.NATS.Shutdown()
	s.NATS.WaitForShutdown()
}
