package testenv

import (
	"context"
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
