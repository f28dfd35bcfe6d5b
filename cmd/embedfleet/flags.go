package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// natsFlags, milvusFlags and s3Flags bind the connection settings that
// several commands share. Secrets come from the environment only.

type natsFlags struct {
	cfg      bus.Config
	prefix   string
	replicas int
}

func (n *natsFlags) bind(f *pflag.FlagSet) {
	f.StringVar(&n.cfg.URL, "nats-url", envOr("EMBEDFLEET_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (env EMBEDFLEET_NATS_URL)")
	f.StringVar(&n.cfg.CredsFile, "nats-creds", os.Getenv("EMBEDFLEET_NATS_CREDS"), "NATS credentials file (env EMBEDFLEET_NATS_CREDS)")
	f.StringVar(&n.cfg.NKeyFile, "nats-nkey", os.Getenv("EMBEDFLEET_NATS_NKEY"), "NATS nkey seed file (env EMBEDFLEET_NATS_NKEY)")
	f.StringVar(&n.cfg.CAFile, "nats-ca", os.Getenv("EMBEDFLEET_NATS_CA"), "CA file to verify NATS's TLS certificate (env EMBEDFLEET_NATS_CA)")
	f.StringVar(&n.cfg.CertFile, "nats-cert", os.Getenv("EMBEDFLEET_NATS_CERT"), "TLS client certificate (env EMBEDFLEET_NATS_CERT)")
	f.StringVar(&n.cfg.KeyFile, "nats-key", os.Getenv("EMBEDFLEET_NATS_KEY"), "TLS client key (env EMBEDFLEET_NATS_KEY)")
	f.IntVar(&n.replicas, "replicas", envInt("EMBEDFLEET_NATS_REPLICAS", 0),
		"replicas of the streams and buckets: 3 in a NATS cluster; 0 keeps what they have (1 for new ones), so a process without it never scales them down (env EMBEDFLEET_NATS_REPLICAS)")
	f.StringVar(&n.prefix, "prefix", envOr("EMBEDFLEET_PREFIX", "EMBEDFLEET"), "name prefix of the streams and buckets, to share a NATS between installations (env EMBEDFLEET_PREFIX)")
	// User, password and token: environment only, never on a command line.
	n.cfg.User = os.Getenv("EMBEDFLEET_NATS_USER")
	n.cfg.Password = os.Getenv("EMBEDFLEET_NATS_PASSWORD")
	n.cfg.Token = os.Getenv("EMBEDFLEET_NATS_TOKEN")
}

func (n *natsFlags) topology() bus.Topology { return bus.Topology{Prefix: strings.ToUpper(n.prefix)} }

// connect connects to NATS as client name and makes sure the streams and
// buckets exist; the caller closes the connection.
func (n *natsFlags) connect(ctx context.Context, name string, so bus.StreamOptions) (*nats.Conn, jetstream.JetStream, bus.Topology, error) {
	n.cfg.Name = name
	if so.Replicas == 0 {
		so.Replicas = n.replicas
	}
	nc, js, err := bus.Connect(n.cfg)
	if err != nil {
		return nil, nil, bus.Topology{}, err
	}
	topo := n.topology()
	if err := topo.Ensure(ctx, js, so); err != nil {
		nc.Close()
		return nil, nil, bus.Topology{}, err
	}
	return nc, js, topo, nil
}

type milvusFlags struct{ cfg vecstore.Config }

func (m *milvusFlags) bind(f *pflag.FlagSet) {
	f.StringVar(&m.cfg.Address, "milvus-addr", envOr("EMBEDFLEET_MILVUS_ADDR", "127.0.0.1:19530"), "Milvus gRPC address (env EMBEDFLEET_MILVUS_ADDR)")
	f.StringVar(&m.cfg.DBName, "milvus-db", os.Getenv("EMBEDFLEET_MILVUS_DB"), "Milvus database (env EMBEDFLEET_MILVUS_DB)")
	f.BoolVar(&m.cfg.TLS, "milvus-tls", os.Getenv("EMBEDFLEET_MILVUS_TLS") == "true", "use TLS to Milvus (env EMBEDFLEET_MILVUS_TLS=true)")
	f.StringVar(&m.cfg.CAFile, "milvus-ca", os.Getenv("EMBEDFLEET_MILVUS_CA"), "CA file to verify Milvus's TLS certificate; implies TLS (env EMBEDFLEET_MILVUS_CA)")
	m.cfg.Username = os.Getenv("EMBEDFLEET_MILVUS_USER")
	m.cfg.Password = os.Getenv("EMBEDFLEET_MILVUS_PASSWORD")
	m.cfg.APIKey = os.Getenv("EMBEDFLEET_MILVUS_TOKEN")
}

// bindIndex adds the settings of the collections a command creates; only the
// worker creates them.
func (m *milvusFlags) bindIndex(f *pflag.FlagSet) {
	f.StringVar(&m.cfg.IndexType, "index-type", envOr("EMBEDFLEET_INDEX_TYPE", "AUTOINDEX"), "index of new collections: AUTOINDEX, FLAT, IVF_FLAT or HNSW (env EMBEDFLEET_INDEX_TYPE)")
	f.IntVar(&m.cfg.HNSWM, "hnsw-m", 16, "HNSW M (with --index-type HNSW)")
	f.IntVar(&m.cfg.HNSWEfConstruct, "hnsw-ef-construction", 200, "HNSW efConstruction (with --index-type HNSW)")
}

// bindSearch adds the settings of searching: ANN search parameters, and
// the consistency level of searches (defaultLevel: bounded for the query
// server, strong for one-off commands).
func (m *milvusFlags) bindSearch(f *pflag.FlagSet, defaultLevel string) {
	f.IntVar(&m.cfg.SearchEf, "search-ef", envInt("EMBEDFLEET_SEARCH_EF", vecstore.DefaultSearchEf),
		"HNSW collections: ef of each search, at least k (env EMBEDFLEET_SEARCH_EF)")
	f.IntVar(&m.cfg.SearchNProbe, "search-nprobe", envInt("EMBEDFLEET_SEARCH_NPROBE", vecstore.DefaultSearchNProbe),
		"IVF collections: clusters each search visits (env EMBEDFLEET_SEARCH_NPROBE)")
	f.Var(&consistencyFlag{&m.cfg.SearchConsistency}, "consistency", "consistency of searches: strong, bounded, session or eventually "+
		"(bounded: a new image is searchable within the server's graceful time, 5 s by default; env EMBEDFLEET_CONSISTENCY; default "+defaultLevel+")")
	_ = f.Set("consistency", envOr("EMBEDFLEET_CONSISTENCY", defaultLevel))
}

// consistencyFlag is a Milvus consistency level by name.
type consistencyFlag struct{ v *entity.ConsistencyLevel }

func (c *consistencyFlag) String() string {
	if c.v == nil || *c.v == 0 {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(c.v.CommonConsistencyLevel().String(), "Cl"))
}

func (c *consistencyFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "strong":
		*c.v = entity.ClStrong
	case "bounded":
		*c.v = entity.ClBounded
	case "session":
		*c.v = entity.ClSession
	case "eventually":
		*c.v = entity.ClEventually
	default:
		return fmt.Errorf("%q: want strong, bounded, session or eventually", s)
	}
	return nil
}

func (c *consistencyFlag) Type() string { return "level" }

type s3Flags struct {
	cfg     objstore.S3Config
	include []string
	exclude []string
}

func (s *s3Flags) bind(f *pflag.FlagSet) {
	s.bindConn(f)
	s.bindFilter(f)
}

// bindConn binds how S3 is reached, without the listing filters.
func (s *s3Flags) bindConn(f *pflag.FlagSet) {
	f.StringVar(&s.cfg.Endpoint, "s3-endpoint", envOr("EMBEDFLEET_S3_ENDPOINT", "s3.amazonaws.com"), "S3 endpoint host:port (env EMBEDFLEET_S3_ENDPOINT); credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials")
	f.StringVar(&s.cfg.Region, "s3-region", os.Getenv("EMBEDFLEET_S3_REGION"), "S3 region (env EMBEDFLEET_S3_REGION)")
	f.BoolVar(&s.cfg.Insecure, "s3-insecure", os.Getenv("EMBEDFLEET_S3_INSECURE") == "true", "plain HTTP to S3 (env EMBEDFLEET_S3_INSECURE=true)")
	f.StringVar(&s.cfg.CAFile, "s3-ca", os.Getenv("EMBEDFLEET_S3_CA"), "CA file to verify the S3 endpoint's TLS certificate (env EMBEDFLEET_S3_CA)")
	f.BoolVar(&s.cfg.PathStyle, "s3-path-style", os.Getenv("EMBEDFLEET_S3_PATH_STYLE") == "true", "path-style bucket addressing, as MinIO wants (env EMBEDFLEET_S3_PATH_STYLE=true)")
}

func (s *s3Flags) bindFilter(f *pflag.FlagSet) {
	f.StringSliceVar(&s.include, "include", nil, "only objects whose base name matches one of these patterns (default: image extensions)")
	f.StringSliceVar(&s.exclude, "exclude", nil, "skip objects whose base name matches one of these patterns")
}

func (s *s3Flags) open(uri string) (objstore.Source, error) {
	return objstore.Open(uri, s.cfg, objstore.Filter{Include: s.include, Exclude: s.exclude})
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
