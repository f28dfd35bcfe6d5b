package main

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// embedded is the one-machine stack of dev and bench (shared/stack's
// servers) with embedfleet's clients connected and its topology made.
type embedded struct {
	*stack.Stack
	nc    *nats.Conn
	js    jetstream.JetStream
	topo  bus.Topology
	store *vecstore.Store
}

func startEmbedded(ctx context.Context, cfg stack.Config) (*embedded, error) {
	st, err := stack.Start(cfg)
	if err != nil {
		return nil, err
	}
	e := &embedded{Stack: st}
	if e.nc, e.js, err = bus.Connect(bus.Config{URL: st.NATSURL, Name: "embedfleet-embedded"}); err != nil {
		e.close()
		return nil, err
	}
	if err := e.topo.Ensure(ctx, e.js, bus.StreamOptions{}); err != nil {
		e.close()
		return nil, err
	}
	if e.store, err = vecstore.Connect(ctx, vecstore.Config{Address: st.MilvusAddr}); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *embedded) close() {
	if e.store != nil {
		_ = e.store.Close(context.Background())
	}
	if e.nc != nil {
		e.nc.Close()
	}
	e.Stack.Close()
}
