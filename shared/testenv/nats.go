package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/stack"
)

// NATS is a NATS server with JetStream enabled, either inside the test
// process ([StartNATS]) or as a separate nats-server process
// ([StartNATSProcess]) that a test can kill and restart.
type NATS struct {
	URL  string
	Conn *nats.Conn // reconnects forever, so it survives a Restart
	JS   jetstream.JetStream

	srv  *server.Server // in-process mode
	proc *stack.Process // process mode
	bin  string
	conf string
	opts natsOptions
}

// NATSOption configures a nats-server process.
type NATSOption func(*natsOptions)

type natsOptions struct {
	user, password       string
	cert, key, caForTest string
}

// WithNATSAuth requires this user and password.
func WithNATSAuth(user, password string) NATSOption {
	return func(o *natsOptions) { o.user, o.password = user, password }
}

// WithNATSTLS serves TLS with cert and key; the harness's own client trusts
// ca.
func WithNATSTLS(cert, key, ca string) NATSOption {
	return func(o *natsOptions) { o.cert, o.key, o.caForTest = cert, key, ca }
}

func (n *NATS) clientOptions() []nats.Option {
	var opts []nats.Option
	if n.opts.user != "" {
		opts = append(opts, nats.UserInfo(n.opts.user, n.opts.password))
	}
	if n.opts.caForTest != "" {
		opts = append(opts, nats.RootCAs(n.opts.caForTest))
	}
	return opts
}

// StartNATS starts an in-process NATS server with JetStream on a free
// loopback port, storing streams in the test's temp dir.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	skipShort(t, "NATS JetStream")
	srv, err := stack.StartNATS(t.TempDir())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	n := &NATS{URL: srv.ClientURL(), srv: srv}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	n.connect(t)
	return n
}

// StartNATSProcess starts nats-server as a child process with JetStream file
// storage in the test's temp dir, syncing every write to disk
// (sync_interval: always) so that a SIGKILL loses nothing it acknowledged.
func StartNATSProcess(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	skipShort(t, "nats-server")
	n := &NATS{bin: Binary(t, EnvNATSBin)}
	for _, o := range opts {
		o(&n.opts)
	}
	dir := t.TempDir()
	err := stack.StartOnFreePort(func(port int) error {
		n.URL = "nats://" + stack.HostPort(port)
		n.conf = filepath.Join(dir, "nats.conf")
		conf := fmt.Sprintf("listen: %q\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n",
			stack.HostPort(port), filepath.Join(dir, "js"))
		if n.opts.user != "" {
			conf += fmt.Sprintf("authorization {\n  user: %q\n  password: %q\n}\n", n.opts.user, n.opts.password)
		}
		if n.opts.cert != "" {
			n.URL = "tls://" + stack.HostPort(port)
			conf += fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n}\n", n.opts.cert, n.opts.key)
		}
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			return err
		}
		return n.startProcess()
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { n.proc.Stop(5 * time.Second) })
	n.connect(t)
	return n
}

func (n *NATS) startProcess() error {
	p, err := stack.StartProcess("nats-server", filepath.Dir(n.conf), nil, n.bin, "-c", n.conf)
	if err != nil {
		return err
	}
	err = p.WaitReady(30*time.Second, func() error {
		nc, err := nats.Connect(n.URL, append(n.clientOptions(), nats.Timeout(time.Second))...)
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	if err != nil {
		p.Kill()
		if stack.PortTakenIn(p.LogTail(20)) {
			return stack.ErrPortTaken
		}
		return err
	}
	n.proc = p
	return nil
}

func (n *NATS) connect(t testing.TB) {
	t.Helper()
	nc, err := nats.Connect(n.URL, append(n.clientOptions(),
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
	)...)
	if err != nil {
		t.Fatalf("testenv: nats at %s: connect: %v", n.URL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: nats at %s: jetstream: %v", n.URL, err)
	}
	n.Conn, n.JS = nc, js
}

// Ping checks that JetStream answers. Its error names the server.
func (n *NATS) Ping(ctx context.Context) error {
	if err := stack.DialCheck(strings.TrimPrefix(strings.TrimPrefix(n.URL, "nats://"), "tls://")); err != nil {
		return fmt.Errorf("nats at %s: %w", n.URL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := n.JS.AccountInfo(ctx); err != nil {
		return fmt.Errorf("nats at %s: %w", n.URL, err)
	}
	return nil
}

// Kill ends a nats-server process with SIGKILL, as a crash would. It fails
// the test for an in-process server.
func (n *NATS) Kill(t testing.TB) {
	t.Helper()
	if n.proc == nil {
		t.Fatal("testenv: Kill needs a server from StartNATSProcess")
	}
	n.proc.Kill()
}

// Restart starts the nats-server process again on the same port and store
// directory after Kill or Stop; n.Conn reconnects by itself.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	if n.proc == nil {
		t.Fatal("testenv: Restart needs a server from StartNATSProcess")
	}
	if !n.proc.Exited() {
		t.Fatal("testenv: Restart of a nats-server that is still running")
	}
	if err := n.startProcess(); err != nil {
		t.Fatalf("testenv: restart: %v", err)
	}
}

// Stop ends the server now, as an outage would.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		return
	}
	n.proc.Stop(5 * time.Second)
}

// NATSCluster is a JetStream cluster of nats-server processes on loopback,
// as the Helm chart runs NATS (3 replicas): streams and buckets made with
// Replicas 3 survive the loss of any one node.
type NATSCluster struct {
	URL   string // every node's client URL, comma-separated, as --nats-url takes them
	Conn  *nats.Conn
	JS    jetstream.JetStream
	Nodes []*NATS // each node's process (Kill, Restart); their own Conn and JS are nil
	names []string
}

// StartNATSCluster starts n nats-server processes (n >= 3 for a quorum)
// routed to each other as one JetStream cluster with file storage synced
// on every write, waits until JetStream has a meta leader, and connects.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	skipShort(t, "a nats-server cluster")
	if n < 3 {
		t.Fatalf("testenv: a JetStream cluster needs at least 3 nodes, got %d", n)
	}
	bin := Binary(t, EnvNATSBin)
	// The ports are picked free and bound only when the nodes start, so a
	// process of another test may take one in between: then the nodes
	// started are stopped and the cluster starts again on other ports.
	var c *NATSCluster
	var err error
	for range 3 {
		if c, err = startCluster(t, bin, n); !errors.Is(err, stack.ErrPortTaken) {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			if node.proc != nil && !node.proc.Exited() {
				node.proc.Stop(5 * time.Second)
			}
		}
	})
	nc, err := nats.Connect(c.URL, nats.Name(t.Name()), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("testenv: nats cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	if c.JS, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	c.Conn = nc
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.JS.AccountInfo(ctx)
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: the nats cluster elected no JetStream leader in 60 s: %v\n%s", err, c.Nodes[0].proc.LogTail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startCluster starts the n nodes of a cluster on free ports; when one
// fails it stops those started and returns the error.
func startCluster(t testing.TB, bin string, n int) (*NATSCluster, error) {
	c := &NATSCluster{}
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		var err error
		if clientPorts[i], err = stack.FreePort(); err == nil {
			routePorts[i], err = stack.FreePort()
		}
		if err != nil {
			return nil, err
		}
	}
	var routes, urls []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://%s", stack.HostPort(routePorts[i])))
		urls = append(urls, "nats://"+stack.HostPort(clientPorts[i]))
	}
	c.URL = strings.Join(urls, ",")
	for i := range n {
		dir := t.TempDir()
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: %q\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n"+
			"cluster {\n  name: embedfleet\n  listen: %q\n  routes: [%s]\n}\n",
			name, stack.HostPort(clientPorts[i]), filepath.Join(dir, "js"), stack.HostPort(routePorts[i]), strings.Join(routes, ", "))
		node := &NATS{URL: urls[i], bin: bin, conf: filepath.Join(dir, "nats.conf")}
		err := os.WriteFile(node.conf, []byte(conf), 0o644)
		if err == nil {
			err = node.startProcess()
		}
		if err != nil {
			for _, started := range c.Nodes {
				started.proc.Stop(5 * time.Second)
			}
			return nil, fmt.Errorf("cluster node %s: %w", name, err)
		}
		c.Nodes, c.names = append(c.Nodes, node), append(c.names, name)
	}
	return c, nil
}

// StreamLeader is the index in Nodes of the node that leads stream.
func (c *NATSCluster) StreamLeader(ctx context.Context, stream string) (int, error) {
	s, err := c.JS.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1, err
	}
	if info.Cluster == nil {
		return -1, fmt.Errorf("stream %s has no cluster info", stream)
	}
	for i, n := range c.names {
		if n == info.Cluster.Leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("stream %s: leader %q is no node of this cluster", stream, info.Cluster.Leader)
}
