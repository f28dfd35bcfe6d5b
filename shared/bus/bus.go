// Package bus sets up embedfleet's NATS JetStream plumbing, idempotently:
// the connection (auth and TLS passed through), the jobs stream (work
// queue), the results and dead-letter streams, the workers' durable pull
// consumer, and the KV buckets for run records, leases and failure records.
//
//	nc, js, err := bus.Connect(bus.Config{URL: "nats://nats:4222"})
//	t := bus.Topology{Prefix: "EMBEDFLEET"}
//	err = t.Ensure(ctx, js, bus.StreamOptions{Replicas: 3})
//	cons, err := t.WorkerConsumer(ctx, js, bus.ConsumerOptions{AckWait: 2 * time.Minute})
package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/retry"
)

// Config says how to reach NATS. Secrets are never logged.
type Config struct {
	URL       string // nats://host:4222, comma-separated for a cluster
	Name      string // client name shown by the server
	User      string
	Password  string
	Token     string
	NKeyFile  string // nkey seed file
	CredsFile string // JWT + nkey credentials file
	CAFile    string // TLS: trust these CAs
	CertFile  string // TLS client certificate
	KeyFile   string
}

// Connect opens a connection that reconnects forever and returns it with
// its JetStream context.
func Connect(cfg Config) (*nats.Conn, jetstream.JetStream, error) {
	if cfg.URL == "" {
		cfg.URL = nats.DefaultURL
	}
	opts := []nats.Option{nats.Name(cfg.Name), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond)}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("bus: nkey %s: %w", cfg.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("bus: nats at %s: %w", redact(cfg.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// redact drops user:password@ from a URL list.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				parts[i] = u[:s+3] + "***@" + u[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// Topology names every stream, subject, consumer and bucket. Prefix
// separates installations (and tests) sharing one NATS.
type Topology struct {
	Prefix string // default EMBEDFLEET
}

func (t Topology) p() string {
	if t.Prefix == "" {
		return "EMBEDFLEET"
	}
	return t.Prefix
}

func (t Topology) subj() string { return strings.ToLower(t.p()) }

// JobsStream is the work-queue stream of jobs.
func (t Topology) JobsStream() string { return t.p() + "_JOBS" }

// ResultsStream keeps the workers' results for 30 days.
func (t Topology) ResultsStream() string { return t.p() + "_RESULTS" }

// DeadStream keeps dead-lettered jobs for 30 days.
func (t Topology) DeadStream() string { return t.p() + "_DEAD" }

// JobSubject is where the jobs of run go, for the default worker pool.
func (t Topology) JobSubject(run string) string { return t.subj() + ".jobs." + run }

// PoolJobSubject is where the jobs of run go for worker pool pool (the
// default pool's JobSubject for "").
func (t Topology) PoolJobSubject(pool, run string) string {
	if pool == "" {
		return t.JobSubject(run)
	}
	return t.subj() + ".pool." + pool + ".jobs." + run
}

// RunJobSubject is where the jobs of a run go.
func (t Topology) RunJobSubject(r jobs.Run) string { return t.PoolJobSubject(r.Pool, r.ID) }

// ValidPool checks a worker pool's name: 1-32 lowercase letters, digits
// and dashes, starting with a letter ("" is the default pool).
func ValidPool(pool string) error {
	if pool == "" {
		return nil
	}
	if len(pool) > 32 || pool[0] < 'a' || pool[0] > 'z' ||
		strings.IndexFunc(pool, func(r rune) bool { return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' }) >= 0 {
		return fmt.Errorf("bus: pool %q: want 1-32 lowercase letters, digits and dashes, starting with a letter", pool)
	}
	return nil
}

// ResultSubject is where the results of run go.
func (t Topology) ResultSubject(run string) string { return t.subj() + ".results." + run }

// DeadSubject is where the dead letters of run go.
func (t Topology) DeadSubject(run string) string { return t.subj() + ".dead." + run }

// WorkersConsumer is the durable consumer every worker of the default pool
// shares.
func (t Topology) WorkersConsumer() string { return "workers" }

// PoolConsumer is the durable consumer of a worker pool's workers.
func (t Topology) PoolConsumer(pool string) string {
	if pool == "" {
		return t.WorkersConsumer()
	}
	return "workers-" + pool
}

// RunsBucket holds run records and per-source checkpoints.
func (t Topology) RunsBucket() string { return t.p() + "_RUNS" }

// ManifestsBucket is the object store of per-source, per-model manifests.
func (t Topology) ManifestsBucket() string { return t.p() + "_MANIFESTS" }

// FailuresBucket holds a record per object whose bytes cannot be embedded
// (jobs.FailureRecord), keyed by its row id.
func (t Topology) FailuresBucket() string { return t.p() + "_FAILURES" }

// LeasesBucket holds one lease per source, freed by its TTL.
func (t Topology) LeasesBucket() string { return t.p() + "_LEASES" }

// StreamOptions tune the streams.
type StreamOptions struct {
	// Replicas of each stream and bucket: 3 in a cluster. 0 keeps what an
	// existing one has (1 for a new one), so that a process started
	// without the setting never scales a cluster's streams down.
	Replicas   int
	Duplicates time.Duration // dedup window of the jobs stream; default 24 h
	LeaseTTL   time.Duration // lease bucket TTL; default 2 min
	// Wait bounds the retries of each stream's and bucket's creation
	// while JetStream is not ready (Transient errors: a cluster still
	// electing leaders, a server restarting); default 2 min.
	Wait time.Duration
}

// Ensure creates or updates the streams and buckets. Safe to call from
// every process at start-up.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	// replicas is o.Replicas, or the existing stream's (1 for none). A
	// lookup that fails otherwise is an error, never 1: that would scale
	// a cluster's stream down.
	replicas := func(ctx context.Context, stream string) (int, error) {
		if o.Replicas > 0 {
			return o.Replicas, nil
		}
		s, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return 1, nil
		}
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return max(1, info.Config.Replicas), nil
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 24 * time.Hour
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Minute
	}
	streams := []jetstream.StreamConfig{
		{Name: t.JobsStream(), Subjects: []string{t.subj() + ".jobs.>", t.subj() + ".pool.>"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: o.Duplicates},
		{Name: t.ResultsStream(), Subjects: []string{t.subj() + ".results.>"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, MaxAge: 30 * 24 * time.Hour},
		{Name: t.DeadStream(), Subjects: []string{t.subj() + ".dead.>"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, MaxAge: 30 * 24 * time.Hour},
	}
	for _, sc := range streams {
		err := retryAPI(ctx, o.Wait, func(ctx context.Context) (err error) {
			if sc.Replicas, err = replicas(ctx, sc.Name); err != nil {
				return err
			}
			_, err = js.CreateOrUpdateStream(ctx, sc)
			return err
		})
		if err != nil {
			return fmt.Errorf("bus: stream %s: %w", sc.Name, err)
		}
	}
	kvs := []jetstream.KeyValueConfig{
		{Bucket: t.RunsBucket(), History: 1, Storage: jetstream.FileStorage},
		{Bucket: t.FailuresBucket(), History: 1, Storage: jetstream.FileStorage},
		{Bucket: t.LeasesBucket(), History: 1, Storage: jetstream.FileStorage, TTL: o.LeaseTTL},
	}
	for _, kc := range kvs {
		err := retryAPI(ctx, o.Wait, func(ctx context.Context) (err error) {
			if kc.Replicas, err = replicas(ctx, "KV_"+kc.Bucket); err != nil {
				return err
			}
			_, err = js.CreateOrUpdateKeyValue(ctx, kc)
			return err
		})
		if err != nil {
			return fmt.Errorf("bus: kv %s: %w", kc.Bucket, err)
		}
	}
	err := retryAPI(ctx, o.Wait, func(ctx context.Context) error {
		r, err := replicas(ctx, "OBJ_"+t.ManifestsBucket())
		if err != nil {
			return err
		}
		_, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: t.ManifestsBucket(),
			Storage: jetstream.FileStorage, Replicas: r})
		return err
	})
	if err != nil {
		return fmt.Errorf("bus: object store %s: %w", t.ManifestsBucket(), err)
	}
	return nil
}

// Transient reports whether err, from a JetStream API call, may pass on
// its own: the call timed out, nothing answered (no JetStream leader
// yet, as while a cluster elects one), the cluster said it is
// unavailable (503), or the connection is being re-established.
func Transient(err error) bool {
	var api *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &api):
		return api.Code == 503
	}
	return false
}

// apiAttempt bounds one JetStream API call that retryAPI makes: longer
// than the client's default (5 s), which a cluster busy electing leaders
// on a loaded machine can exceed.
const apiAttempt = 15 * time.Second

// retryAPI runs op, each attempt bounded by apiAttempt, until it succeeds,
// fails with an error that is not Transient, ctx ends, or wait (default
// 2 min) has passed; then it returns the last error. The delay between
// attempts doubles from 250 ms to 5 s.
func retryAPI(ctx context.Context, wait time.Duration, op func(context.Context) error) error {
	if wait <= 0 {
		wait = 2 * time.Minute
	}
	return retry.Do(ctx, retry.Policy{Wait: wait, First: 250 * time.Millisecond, Max: 5 * time.Second, PerCall: apiAttempt}, Transient, op)
}

// ConsumerOptions size the workers' consumer. Zero fields take defaults.
type ConsumerOptions struct {
	AckWait    time.Duration   // default 2 min; workers send InProgress while they work
	MaxDeliver int             // default 10; then the job is dead-lettered
	BackOff    []time.Duration // redelivery delays after an ack timeout
	// MaxAckPending caps unacknowledged jobs across all workers; default
	// 4 per worker expected (Workers).
	MaxAckPending int
	Workers       int
	// Pool is the worker pool ("" for the default): its consumer takes
	// only the jobs of runs published for it (PoolJobSubject).
	Pool string
	// Wait bounds the retries of the consumer's creation while JetStream
	// is not ready (see StreamOptions.Wait); default 2 min.
	Wait time.Duration
}

// WorkerConsumer creates or updates the durable pull consumer that every
// worker shares.
func (t Topology) WorkerConsumer(ctx context.Context, js jetstream.JetStream, o ConsumerOptions) (jetstream.Consumer, error) {
	if o.AckWait <= 0 {
		o.AckWait = 2 * time.Minute
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = 10
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 4 * o.Workers
	}
	if err := ValidPool(o.Pool); err != nil {
		return nil, err
	}
	filter := t.subj() + ".jobs.>"
	if o.Pool != "" {
		filter = t.subj() + ".pool." + o.Pool + ".jobs.>"
	}
	cc := jetstream.ConsumerConfig{
		Durable:       t.PoolConsumer(o.Pool),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: o.MaxAckPending,
		FilterSubject: filter,
	}
	if len(o.BackOff) > 0 {
		cc.BackOff = o.BackOff
	}
	var c jetstream.Consumer
	err := retryAPI(ctx, o.Wait, func(ctx context.Context) error {
		var err error
		c, err = js.CreateOrUpdateConsumer(ctx, t.JobsStream(), cc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", cc.Durable, t.JobsStream(), err)
	}
	return c, nil
}

// ErrLeaseHeld is returned (wrapped) by a coordinator run whose source's
// lease another run holds.
var ErrLeaseHeld = errors.New("lease held by another run")
