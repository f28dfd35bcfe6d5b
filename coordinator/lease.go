package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
)

// lease is a KV entry that only its holder may update; the bucket's TTL
// frees it when a holder dies without releasing it.
type lease struct {
	kv     jetstream.KeyValue
	key    string
	owner  string
	rev    atomic.Uint64
	gone   atomic.Bool
	stop   chan struct{}
	period time.Duration
}

func acquire(ctx context.Context, kv jetstream.KeyValue, key, owner string) (*lease, error) {
	rev, err := kv.Create(ctx, key, []byte(owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		holder := "unknown"
		if e, gerr := kv.Get(ctx, key); gerr == nil {
			holder = string(e.Value())
		}
		return nil, fmt.Errorf("%w: %s holds the lease of this source", bus.ErrLeaseHeld, holder)
	}
	if err != nil {
		return nil, fmt.Errorf("coordinator: take lease: %w", err)
	}
	st, err := kv.Status(ctx)
	period := 20 * time.Second
	if err == nil && st.TTL() > 0 {
		period = st.TTL() / 4
	}
	l := &lease{kv: kv, key: key, owner: owner, stop: make(chan struct{}), period: period}
	l.rev.Store(rev)
	return l, nil
}

// keep refreshes the lease until release or ctx ends.
func (l *lease) keep(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(l.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.stop:
			return
		case <-t.C:
			rev, err := l.kv.Update(ctx, l.key, []byte(l.owner), l.rev.Load())
			if err != nil {
				log.Error("lease lost", "err", err)
				l.gone.Store(true)
				return
			}
			l.rev.Store(rev)
		}
	}
}

func (l *lease) lost() bool { return l.gone.Load() }

// release deletes the lease if it is still ours.
func (l *lease) release() {
	close(l.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev.Load()))
}
