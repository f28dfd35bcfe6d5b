package vecstore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"github.com/milvus-io/milvus/pkg/v2/util/merr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// Errors the package returns (wrapped).
var (
	// ErrModelVersionMismatch: the collection holds vectors of another
	// version of the model.
	ErrModelVersionMismatch = errors.New("collection holds another model version")
	// ErrServer: Milvus answered with an error of its own (not a refusal
	// of what embedfleet sent before it was sent): a server restarting
	// answers so for a while (its proxy's clients of its other nodes are
	// not connected yet), so a writer may try again later.
	ErrServer = errors.New("milvus error")
	// ErrUnavailable: Milvus could not be reached or did not answer; the
	// caller may retry later.
	ErrUnavailable = errors.New("milvus unavailable")
	// ErrNoCollection: the model has no collection yet (nothing indexed).
	ErrNoCollection = errors.New("no collection")
)

// Field names of every collection.
const (
	FieldID           = "id"            // hex of sha256(object URI), 32 chars
	FieldVector       = "vector"        // float32, the model's dimension, L2-normalised
	FieldURI          = "uri"           // s3://bucket/key or file path
	FieldETag         = "etag"          // the object's ETag when embedded
	FieldSize         = "size"          // bytes
	FieldWidth        = "width"         // pixels, upright
	FieldHeight       = "height"        // pixels, upright
	FieldModelVersion = "model_version" // sha256:... of the ONNX file
	FieldIndexedAt    = "indexed_at"    // unix seconds
	// FieldSHA256 is the hex sha256 of the object's bytes, for finding
	// exact duplicates. Collections made before it was added have no such
	// field and keep working without it (Collection.HasSHA256).
	FieldSHA256 = "sha256"

	propModelVersion = "embedfleet.model_version"
)

// Config says how to reach Milvus and how to index.
type Config struct {
	Address  string // host:port
	Username string
	Password string
	APIKey   string // token (Zilliz Cloud or a Milvus user token)
	DBName   string
	TLS      bool   // TLS with the system's CAs
	CAFile   string // TLS trusting these CAs (implies TLS)

	// IndexType: AUTOINDEX (default), FLAT, IVF_FLAT or HNSW (production
	// Milvus only; milvus-lite refuses it).
	IndexType       string
	HNSWM           int // default 16
	HNSWEfConstruct int // default 200
	IVFNList        int // default 1024

	// Search parameters, by the index type of the collection searched (read
	// from Milvus, whatever IndexType says): HNSW searches with ef =
	// max(k, SearchEf), IVF_* with nprobe = SearchNProbe. A server's
	// defaults are far lower (its HNSW ef is 10): recall@10 of 0.39 where
	// ef=64 gives 0.76 on a hard set (docs/benchmarks.md). milvus-lite
	// searches exactly whatever the index.
	SearchEf     int // default 64
	SearchNProbe int // default 32
	// SearchConsistency is the consistency level of searches and of
	// reading one row by id (Get), the query path; default Strong. A query
	// server sets Bounded: a Strong search waits for every write before it
	// (hundreds of ms on a server), a Bounded one sees writes older than
	// the server's graceful time (5 s by default). Verify, counts, repair,
	// lookups and the active-version pointer always read Strong.
	SearchConsistency entity.ConsistencyLevel

	DialTimeout time.Duration // default 10 s
	// CallTimeout bounds each write and read; the client retries
	// transient failures inside it. Past it the call fails with
	// ErrUnavailable and the worker hands its job back. Default 60 s.
	CallTimeout time.Duration
}

// Store is a connection to Milvus. Safe for concurrent use.
type Store struct {
	c   *milvusclient.Client
	cfg Config
	// metaReady: ActiveCollection is known to exist (it is never dropped
	// by embedfleet); until then Active asks whether it does.
	metaReady atomic.Bool
	// noAliases: the server has no aliases (milvus-lite).
	noAliases atomic.Bool
}

// Connect dials Milvus and checks that it answers.
func Connect(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Address == "" {
		return nil, errors.New("vecstore: address is required")
	}
	if cfg.IndexType == "" {
		cfg.IndexType = "AUTOINDEX"
	}
	switch strings.ToUpper(cfg.IndexType) {
	case "AUTOINDEX", "FLAT", "IVF_FLAT", "HNSW":
		cfg.IndexType = strings.ToUpper(cfg.IndexType)
	default:
		return nil, fmt.Errorf("vecstore: index type %q (want AUTOINDEX, FLAT, IVF_FLAT or HNSW)", cfg.IndexType)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = time.Minute
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	ccfg := &milvusclient.ClientConfig{
		Address: cfg.Address, Username: cfg.Username, Password: cfg.Password,
		APIKey: cfg.APIKey, DBName: cfg.DBName, EnableTLSAuth: cfg.TLS,
		DialOptions: dialOptions(),
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("vecstore: milvus CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vecstore: milvus CA file %s holds no PEM certificate", cfg.CAFile)
		}
		ccfg.DialOptions = dialOptions(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))
	}
	c, err := milvusclient.New(dctx, ccfg)
	if err != nil {
		// gRPC reports a failed TLS handshake as a timeout; say what it was.
		return nil, fmt.Errorf("%w: milvus at %s: %v%s", ErrUnavailable, cfg.Address, err, diagnose(cfg))
	}
	return &Store{c: c, cfg: cfg}, nil
}

// dialOptions are the client's defaults with keepalive pings only while
// calls are open: milvus-lite's server (gRPC's default enforcement) answers
// pings on an idle connection every 5 s, the client's default, with a
// "too_many_pings" GoAway, which drops the connection of an idle query
// server or a waiting benchmark.
func dialOptions(extra ...grpc.DialOption) []grpc.DialOption {
	opts := append([]grpc.DialOption{}, milvusclient.DefaultGrpcOpts...)
	opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
	return append(opts, extra...)
}

// diagnose probes Milvus's address once to explain a failed connection:
// the TCP error, the TLS handshake's error, or that the server speaks TLS
// to a plaintext client. It returns "" when it finds nothing to add.
func diagnose(cfg Config) string {
	const timeout = 3 * time.Second
	conn, err := net.DialTimeout("tcp", cfg.Address, timeout)
	if err != nil {
		return fmt.Sprintf(" (%v)", err)
	}
	conn.Close()
	host, _, _ := net.SplitHostPort(cfg.Address)
	tcfg := &tls.Config{ServerName: host, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	wantTLS := cfg.TLS || cfg.CAFile != ""
	if wantTLS && cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return ""
		}
		tcfg.RootCAs = x509.NewCertPool()
		tcfg.RootCAs.AppendCertsFromPEM(pem)
	}
	if !wantTLS {
		tcfg.InsecureSkipVerify = true // only to learn whether it speaks TLS
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", cfg.Address, tcfg)
	switch {
	case wantTLS && err != nil:
		return fmt.Sprintf(" (TLS handshake: %v)", err)
	case !wantTLS && err == nil:
		tc.Close()
		return " (the server speaks TLS: connect with TLS, giving its CA if it is private)"
	case err == nil:
		tc.Close()
	}
	return ""
}

// Close ends the connection.
func (s *Store) Close(ctx context.Context) error { return s.c.Close(ctx) }

// Ping checks that Milvus answers (a readiness probe).
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(s.cfg.CallTimeout, 5*time.Second))
	defer cancel()
	if _, err := s.c.ListCollections(ctx, milvusclient.NewListCollectionOption()); err != nil {
		return s.wrap("list collections", err)
	}
	return nil
}

// CollectionName is the collection of a model name or target (see Target):
// Milvus allows letters, digits and underscores, so dashes become
// underscores, and a target's set is appended in capitals after two
// underscores ("clip-vit-b32@background" is clip_vit_b32__BACKGROUND), which
// no model name can make: model names are lowercase.
func CollectionName(target string) string {
	model, set := SplitTarget(target)
	name := strings.ReplaceAll(model, "-", "_")
	if set != "" {
		name += "__" + strings.ToUpper(set)
	}
	return name
}

// SetBackground is the set of background images that copy scores are
// normalised against (shared/copies): unrelated images embedded by the same
// model into their own collection.
const SetBackground = "background"

// Target names the collection of one set of a model's vectors: the model
// name alone for the images it indexes, "model@set" for another set (see
// SetBackground). Jobs, runs and the stores take targets wherever they take
// model names.
func Target(model, set string) string {
	if set == "" {
		return model
	}
	return model + "@" + set
}

// SplitTarget is Target's inverse.
func SplitTarget(target string) (model, set string) {
	model, set, _ = strings.Cut(target, "@")
	return model, set
}

// ValidSet checks a set name: lowercase letters and digits, 1-32 of them.
func ValidSet(set string) error {
	if set == "" || len(set) > 32 || strings.IndexFunc(set, func(r rune) bool { return (r < 'a' || r > 'z') && (r < '0' || r > '9') }) >= 0 {
		return fmt.Errorf("vecstore: set %q: want 1-32 lowercase letters and digits", clip(set))
	}
	return nil
}

// ID is the primary key of an object: deterministic from its full URI
// (s3://bucket/key, or the file's absolute path), so that embedding the same
// object again, from any run or listing prefix, replaces its row.
func ID(objectURI string) string {
	h := sha256.Sum256([]byte(objectURI))
	return hex.EncodeToString(h[:idLen/2])
}

// idLen is the length of an id: 32 hex digits.
const idLen = 32

// Collection is one model's collection.
type Collection struct {
	s       *Store
	Name    string
	Model   string
	Version string
	Dim     int
	// HasSHA256: the collection has the content-hash field (FieldSHA256).
	// Rows written to one that lacks it (made before the field existed)
	// carry no hash; it comes with the collection's next re-creation.
	HasSHA256 bool
	id        int64 // Milvus's collection id: later collections have larger ones
	// indexType is the vector index's type, read from Milvus on the first
	// search ("" until then).
	indexType atomic.Value
}

func hasField(desc *entity.Collection, name string) bool {
	if desc.Schema == nil {
		return false
	}
	for _, f := range desc.Schema.Fields {
		if f.Name == name {
			return true
		}
	}
	return false
}

// Ensure creates the collection of spec's model version if it is missing
// (schema, index, load) and checks an existing one: same dimension, same
// model version. The first version of a model gets the collection named
// after it; a later version gets one of its own (VersionedName), so that
// workers of two versions side by side each fill their own. It is
// idempotent and safe to race with other workers.
func (s *Store) Ensure(ctx context.Context, spec embed.Spec) (*Collection, error) {
	names, err := s.listCollections(ctx)
	if err != nil {
		return nil, err
	}
	name := collectionFor(names, spec.Name, spec.Version)
	col, err := s.ensureNamed(ctx, spec, name)
	if errors.Is(err, ErrModelVersionMismatch) && name == CollectionName(spec.Name) && spec.Version != "" {
		// The plain collection holds another version (or another worker
		// made it first with its version): this one gets its own.
		return s.ensureNamed(ctx, spec, VersionedName(spec.Name, spec.Version))
	}
	return col, err
}

// ensureNamed is Ensure for a chosen collection name.
func (s *Store) ensureNamed(ctx context.Context, spec embed.Spec, name string) (*Collection, error) {
	col := &Collection{s: s, Name: name, Model: spec.Name, Version: spec.Version, Dim: spec.Dim}
	has, err := s.c.HasCollection(ctx, milvusclient.NewHasCollectionOption(name))
	if err != nil {
		return nil, s.wrap("has collection "+name, err)
	}
	if !has {
		schema := entity.NewSchema().WithName(name).
			WithDescription(describe(spec)).
			WithField(entity.NewField().WithName(FieldID).WithDataType(entity.FieldTypeVarChar).WithMaxLength(64).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName(FieldVector).WithDataType(entity.FieldTypeFloatVector).WithDim(int64(spec.Dim))).
			WithField(entity.NewField().WithName(FieldURI).WithDataType(entity.FieldTypeVarChar).WithMaxLength(2048)).
			WithField(entity.NewField().WithName(FieldETag).WithDataType(entity.FieldTypeVarChar).WithMaxLength(128)).
			WithField(entity.NewField().WithName(FieldSize).WithDataType(entity.FieldTypeInt64)).
			WithField(entity.NewField().WithName(FieldWidth).WithDataType(entity.FieldTypeInt32)).
			WithField(entity.NewField().WithName(FieldHeight).WithDataType(entity.FieldTypeInt32)).
			WithField(entity.NewField().WithName(FieldModelVersion).WithDataType(entity.FieldTypeVarChar).WithMaxLength(80)).
			WithField(entity.NewField().WithName(FieldIndexedAt).WithDataType(entity.FieldTypeInt64)).
			WithField(entity.NewField().WithName(FieldSHA256).WithDataType(entity.FieldTypeVarChar).WithMaxLength(64))
		create := func() error {
			return s.c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema).
				WithProperty(propModelVersion, spec.Version).WithConsistencyLevel(entity.ClBounded))
		}
		if err := create(); err != nil {
			// Another worker may have made it between the check and the
			// create: then it is there now, and is checked below like any
			// existing collection. (shared/stack waits for a milvus-lite it
			// starts to be ready, so a refusal at start-up is an error too.)
			if has, herr := s.c.HasCollection(ctx, milvusclient.NewHasCollectionOption(name)); herr != nil || !has {
				return nil, s.wrap("create collection "+name, err)
			}
		}
	}
	desc, err := s.c.DescribeCollection(ctx, milvusclient.NewDescribeCollectionOption(name))
	if err != nil {
		return nil, s.wrap("describe collection "+name, err)
	}
	if v := recordedVersion(desc); v != spec.Version {
		return nil, fmt.Errorf("%w: collection %s holds vectors of %s %s; this worker has %s",
			ErrModelVersionMismatch, name, spec.Name, v, spec.Version)
	}
	col.HasSHA256 = hasField(desc, FieldSHA256)
	for _, f := range desc.Schema.Fields {
		if f.Name == FieldVector {
			if d, err := f.GetDim(); err == nil && int(d) != spec.Dim {
				return nil, fmt.Errorf("%w: collection %s has dimension %d, model %s has %d", ErrModelVersionMismatch, name, d, spec.Name, spec.Dim)
			}
		}
	}
	if err := s.ensureIndexLoaded(ctx, name, FieldVector, s.indexFor()); err != nil {
		return nil, err
	}
	return col, nil
}

// The model version is recorded twice: as a collection property (Milvus
// standalone and distributed) and in the schema description, which
// milvus-lite keeps while it drops properties.
const descPrefix = "embedfleet model_version="

func describe(spec embed.Spec) string {
	return descPrefix + spec.Version + " model=" + spec.Name
}

func recordedVersion(desc *entity.Collection) string {
	if v := desc.Properties[propModelVersion]; v != "" {
		return v
	}
	if desc.Schema != nil {
		if rest, ok := strings.CutPrefix(desc.Schema.Description, descPrefix); ok {
			v, _, _ := strings.Cut(rest, " ")
			return v
		}
	}
	return ""
}

func (s *Store) indexFor() index.Index {
	switch s.cfg.IndexType {
	case "FLAT":
		return index.NewFlatIndex(entity.COSINE)
	case "IVF_FLAT":
		return index.NewIvfFlatIndex(entity.COSINE, orDefault(s.cfg.IVFNList, 1024))
	case "HNSW":
		return index.NewHNSWIndex(entity.COSINE, orDefault(s.cfg.HNSWM, 16), orDefault(s.cfg.HNSWEfConstruct, 200))
	}
	return index.NewAutoIndex(entity.COSINE)
}

func orDefault(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// ensureIndexLoaded gives collection name an index idx on field unless it
// has one, and loads it unless it is loaded.
func (s *Store) ensureIndexLoaded(ctx context.Context, name, field string, idx index.Index) error {
	have, err := s.listIndexes(ctx, name)
	if err != nil {
		return err
	}
	if len(have) == 0 {
		task, err := s.c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(name, field, idx))
		if err == nil {
			err = task.Await(ctx)
		}
		if err != nil {
			// An index another worker made meanwhile is as good as ours.
			if again, lerr := s.listIndexes(ctx, name); lerr != nil || len(again) == 0 {
				return fmt.Errorf("vecstore: create %s index on %s: %w", idx.IndexType(), name, err)
			}
		}
	}
	state, err := s.c.GetLoadState(ctx, milvusclient.NewGetLoadStateOption(name))
	if err != nil {
		return s.wrap("load state of "+name, err)
	}
	if state.State != entity.LoadStateLoaded {
		task, err := s.c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(name))
		if err == nil {
			err = task.Await(ctx)
		}
		if err != nil {
			return s.wrap("load "+name, err)
		}
	}
	return nil
}

// listIndexes lists the indexes of collection name. A collection without
// one is an empty list: milvus-lite answers so, a Milvus server answers
// with its "index not found" error (code 700), told apart by its code, not
// its text (milvus-io/milvus#30722).
func (s *Store) listIndexes(ctx context.Context, name string) ([]string, error) {
	have, err := s.c.ListIndexes(ctx, milvusclient.NewListIndexOption(name))
	if errors.Is(err, merr.ErrIndexNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, s.wrap("list indexes of "+name, err)
	}
	return have, nil
}

// wrap marks connection-level failures as ErrUnavailable (by the error's
// type and gRPC status code, see unavailable); both errors stay in the chain.
func (s *Store) wrap(op string, err error) error {
	if errors.Is(err, merr.ErrCollectionNotFound) {
		// Dropped under us (a version retired while a worker writes it,
		// say): typed, so that callers open or ensure it again.
		return fmt.Errorf("%w: milvus at %s: %s: %w", ErrNoCollection, s.cfg.Address, op, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%w: milvus at %s: %s: %w", ErrUnavailable, s.cfg.Address, op, err)
	}
	return fmt.Errorf("vecstore: %w at %s: %s: %w", ErrServer, s.cfg.Address, op, err)
}

// unavailable tells whether err says Milvus could not be reached or did not
// answer in time, from the error's type and gRPC status code.
func unavailable(err error) bool {
	// A server's rate limits and quotas pass: back off and try again, as
	// for an outage, instead of failing a job for good.
	if errors.Is(err, merr.ErrServiceRateLimit) || errors.Is(err, merr.ErrServiceQuotaExceeded) || errors.Is(err, merr.ErrServiceUnavailable) {
		return true
	}
	// A server that restarted loads its collections again in the
	// background: reads fail with "not loaded" until it has.
	if errors.Is(err, merr.ErrCollectionNotLoaded) || errors.Is(err, merr.ErrCollectionNotFullyLoaded) || errors.Is(err, merr.ErrCollectionOnRecovering) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
			return true
		}
	}
	return false
}

// MaxTopK is the most hits one Milvus search returns (its topk limit); a
// search that leaves its query's own row out asks for one more.
const MaxTopK = 16384

// Row is one object's vector and what is stored beside it.
type Row struct {
	ID            string
	URI           string
	ETag          string
	Size          int64
	Width, Height int
	Vector        []float32
	SHA256        string // hex sha256 of the object's bytes; "" when unknown
}

// Upsert writes rows; a row whose ID exists replaces it.
func (c *Collection) Upsert(ctx context.Context, rows []Row) error {
	return c.write(ctx, rows, nil)
}

// written is what a row records of its writing: the model version and
// when.
type written struct {
	version string
	at      int64
}

// write upserts rows, each recorded as written by c's version now, or as
// stamps says (one per row) when it is not nil.
func (c *Collection) write(ctx context.Context, rows []Row, stamps []written) error {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	ids, uris, etags, vers := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	sizes, at := make([]int64, n), make([]int64, n)
	ws, hs := make([]int32, n), make([]int32, n)
	vecs, hashes := make([][]float32, n), make([]string, n)
	now := time.Now().Unix()
	for i, r := range rows {
		if len(r.Vector) != c.Dim {
			return fmt.Errorf("vecstore: %s: row %s has %d values, want %d", c.Name, r.ID, len(r.Vector), c.Dim)
		}
		if len(r.SHA256) > 64 {
			return fmt.Errorf("vecstore: %s: row %s: content hash of %d characters, want at most 64", c.Name, r.ID, len(r.SHA256))
		}
		ids[i], uris[i], etags[i], vers[i] = r.ID, r.URI, r.ETag, c.Version
		sizes[i], at[i], ws[i], hs[i] = r.Size, now, int32(r.Width), int32(r.Height)
		if stamps != nil {
			vers[i], at[i] = stamps[i].version, stamps[i].at
		}
		vecs[i], hashes[i] = r.Vector, r.SHA256
	}
	opt := milvusclient.NewColumnBasedInsertOption(c.Name).
		WithVarcharColumn(FieldID, ids).WithFloatVectorColumn(FieldVector, c.Dim, vecs).
		WithVarcharColumn(FieldURI, uris).WithVarcharColumn(FieldETag, etags).
		WithInt64Column(FieldSize, sizes).WithInt32Column(FieldWidth, ws).WithInt32Column(FieldHeight, hs).
		WithVarcharColumn(FieldModelVersion, vers).WithInt64Column(FieldIndexedAt, at)
	if c.HasSHA256 {
		opt = opt.WithVarcharColumn(FieldSHA256, hashes)
	}
	_, err := c.s.c.Upsert(ctx, opt)
	if err != nil {
		return c.s.wrap("upsert into "+c.Name, err)
	}
	return nil
}

// Delete removes rows by ID.
// A request of any size fails on a server past its 64 MB message limit,
// so ids go DeleteChunk at a time (about 40 KB of expression each).
func (c *Collection) Delete(ctx context.Context, ids []string) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), DeleteChunk)]
		ids = ids[len(chunk):]
		if err := c.deleteChunk(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// DeleteChunk is the most ids one delete request names.
const DeleteChunk = 1000

func (c *Collection) deleteChunk(ctx context.Context, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	expr, err := idsFilter(ids)
	if err != nil {
		return fmt.Errorf("vecstore: delete from %s: %w", c.Name, err)
	}
	_, err = c.s.c.Delete(ctx, milvusclient.NewDeleteOption(c.Name).WithExpr(expr))
	if err != nil {
		return c.s.wrap("delete from "+c.Name, err)
	}
	return nil
}

// Hit is one search result.
type Hit struct {
	ID     string
	URI    string
	Cosine float64
	SHA256 string // the row's content hash, where the collection has them
}

// Search returns the k rows nearest to vec by cosine, best first.
func (c *Collection) Search(ctx context.Context, vec []float32, k int) ([]Hit, error) {
	hits, err := c.SearchMany(ctx, [][]float32{vec}, k)
	if err != nil {
		return nil, err
	}
	return hits[0], nil
}

// SearchMany runs several query vectors in one request (Milvus's nq);
// hits[i] answers vecs[i], best first.
func (c *Collection) SearchMany(ctx context.Context, vecs [][]float32, k int) ([][]Hit, error) {
	return c.SearchManyUnder(ctx, vecs, k, "")
}

// SearchManyUnder is SearchMany among the rows whose URI starts with
// uriPrefix (all rows when it is empty). The filter is built here, escaped
// (see expr.go); a prefix holding a LIKE wildcard is matched up to it by
// Milvus and exactly here, so a search may return fewer than k hits.
func (c *Collection) SearchManyUnder(ctx context.Context, vecs [][]float32, k int, uriPrefix string) ([][]Hit, error) {
	if len(vecs) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	qs := make([]entity.Vector, len(vecs))
	for i, v := range vecs {
		qs[i] = entity.FloatVector(v)
	}
	out := []string{FieldURI}
	if c.HasSHA256 {
		out = append(out, FieldSHA256)
	}
	opt := milvusclient.NewSearchOption(c.Name, k, qs).
		WithANNSField(FieldVector).WithOutputFields(out...).WithConsistencyLevel(c.s.searchLevel())
	if p, err := c.annParam(ctx, k); err != nil {
		return nil, err
	} else if p != nil {
		opt = opt.WithAnnParam(p)
	}
	if uriPrefix != "" {
		opt = opt.WithFilter(uriPrefixFilter(uriPrefix))
	}
	rs, err := c.s.c.Search(ctx, opt)
	if err != nil {
		return nil, c.s.wrap("search "+c.Name, err)
	}
	if len(rs) != len(vecs) {
		return nil, fmt.Errorf("vecstore: search %s: %d result sets for %d queries", c.Name, len(rs), len(vecs))
	}
	all := make([][]Hit, len(rs))
	for q, r := range rs {
		hits := make([]Hit, r.ResultCount)
		uriCol, shaCol := r.GetColumn(FieldURI), r.GetColumn(FieldSHA256)
		for i := range hits {
			id, _ := r.IDs.GetAsString(i)
			h := Hit{ID: id, Cosine: float64(r.Scores[i])}
			if uriCol != nil {
				h.URI, _ = uriCol.GetAsString(i)
			}
			if shaCol != nil {
				h.SHA256, _ = shaCol.GetAsString(i)
			}
			hits[i] = h
		}
		if uriPrefix != "" {
			hits = slices.DeleteFunc(hits, func(h Hit) bool { return !strings.HasPrefix(h.URI, uriPrefix) })
		}
		all[q] = hits
	}
	return all, nil
}

// searchLevel is the consistency level of the query path (Config).
func (s *Store) searchLevel() entity.ConsistencyLevel {
	if s.cfg.SearchConsistency == 0 {
		return entity.ClStrong
	}
	return s.cfg.SearchConsistency
}

// annParam is the search parameter for k hits in c's index (nil: the
// index takes none).
func (c *Collection) annParam(ctx context.Context, k int) (index.AnnParam, error) {
	t, _ := c.indexType.Load().(string)
	if t == "" {
		names, err := c.s.listIndexes(ctx, c.Name)
		if err != nil {
			return nil, err
		}
		t = "none"
		if len(names) > 0 {
			d, err := c.s.c.DescribeIndex(ctx, milvusclient.NewDescribeIndexOption(c.Name, names[0]))
			if err != nil {
				return nil, c.s.wrap("describe the index of "+c.Name, err)
			}
			t = string(d.IndexType())
		}
		c.indexType.Store(t)
	}
	switch {
	case t == string(index.HNSW):
		return index.NewHNSWAnnParam(max(k, orDefault(c.s.cfg.SearchEf, DefaultSearchEf))), nil
	case strings.HasPrefix(t, "IVF"):
		return index.NewIvfAnnParam(orDefault(c.s.cfg.SearchNProbe, DefaultSearchNProbe)), nil
	}
	return nil, nil
}

// Default search parameters (Config.SearchEf, Config.SearchNProbe).
const (
	DefaultSearchEf     = 64
	DefaultSearchNProbe = 32
)

// Get reads one row with its vector; found is false when there is none,
// and for a string that is not an id (see ValidateID), which is not sent to
// Milvus.
func (c *Collection) Get(ctx context.Context, id string) (row Row, found bool, err error) {
	if ValidateID(id) != nil {
		return Row{}, false, nil
	}
	expr, err := idsFilter([]string{id})
	if err != nil {
		return Row{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	rs, err := c.s.c.Query(ctx, milvusclient.NewQueryOption(c.Name).WithFilter(expr).
		WithOutputFields(c.rowFields()...).WithConsistencyLevel(c.s.searchLevel()))
	if err != nil {
		return Row{}, false, c.s.wrap("get from "+c.Name, err)
	}
	if rs.ResultCount == 0 {
		return Row{}, false, nil
	}
	rows, err := c.readRows(rs)
	if err != nil {
		return Row{}, false, err
	}
	return rows[0], true, nil
}

// rowFields are the fields of a whole Row.
func (c *Collection) rowFields() []string {
	fs := []string{FieldID, FieldVector, FieldURI, FieldETag, FieldSize, FieldWidth, FieldHeight}
	if c.HasSHA256 {
		fs = append(fs, FieldSHA256)
	}
	return fs
}

// readRows turns a query's result set (of rowFields) into rows.
func (c *Collection) readRows(rs milvusclient.ResultSet) ([]Row, error) {
	idc, uc, ec := rs.GetColumn(FieldID), rs.GetColumn(FieldURI), rs.GetColumn(FieldETag)
	sc, wc, hc, vc := rs.GetColumn(FieldSize), rs.GetColumn(FieldWidth), rs.GetColumn(FieldHeight), rs.GetColumn(FieldVector)
	if idc == nil || uc == nil || ec == nil || sc == nil || wc == nil || hc == nil || vc == nil {
		return nil, fmt.Errorf("vecstore: %s: a query answered without the fields it asked for", c.Name)
	}
	shac := rs.GetColumn(FieldSHA256)
	rows := make([]Row, rs.ResultCount)
	for i := range rows {
		r := &rows[i]
		r.ID, _ = idc.GetAsString(i)
		r.URI, _ = uc.GetAsString(i)
		r.ETag, _ = ec.GetAsString(i)
		r.Size, _ = sc.GetAsInt64(i)
		w, _ := wc.GetAsInt64(i)
		h, _ := hc.GetAsInt64(i)
		r.Width, r.Height = int(w), int(h)
		if shac != nil {
			r.SHA256, _ = shac.GetAsString(i)
		}
		v, err := vc.Get(i)
		if err != nil {
			return nil, fmt.Errorf("vecstore: %s: row %s: vector: %w", c.Name, r.ID, err)
		}
		vec, ok := v.(entity.FloatVector)
		if !ok {
			return nil, fmt.Errorf("vecstore: %s: row %s: vector is %T", c.Name, r.ID, v)
		}
		r.Vector = []float32(vec)
	}
	return rows, nil
}

// GetMany reads the rows of ids with their vectors; ids without a row (and
// strings that are not ids) are absent from the map.
func (c *Collection) GetMany(ctx context.Context, ids []string) (map[string]Row, error) {
	out := make(map[string]Row, len(ids))
	valid := validIDs(ids)
	for first := 0; first < len(valid); first += 1000 {
		expr, err := idsFilter(valid[first:min(first+1000, len(valid))])
		if err != nil {
			return nil, err
		}
		qctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
		rs, err := c.s.c.Query(qctx, milvusclient.NewQueryOption(c.Name).WithFilter(expr).
			WithOutputFields(c.rowFields()...).WithConsistencyLevel(entity.ClStrong))
		cancel()
		if err != nil {
			return nil, c.s.wrap("get from "+c.Name, err)
		}
		rows, err := c.readRows(rs)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r.ID] = r
		}
	}
	return out, nil
}

// Scan calls fn with every row whose URI starts with prefix ("" for all),
// vectors included, batch rows at a time (a query iterator: memory stays
// flat in the collection's size). Rows written while it runs may or may not
// be seen.
func (c *Collection) Scan(ctx context.Context, prefix string, batch int, fn func([]Row) error) error {
	if batch <= 0 {
		batch = 1000
	}
	opt := milvusclient.NewQueryIteratorOption(c.Name).WithOutputFields(c.rowFields()...).
		WithBatchSize(batch).WithConsistencyLevel(entity.ClStrong)
	if prefix != "" {
		opt = opt.WithFilter(uriPrefixFilter(prefix))
	}
	it, err := c.s.c.QueryIterator(ctx, opt)
	if err != nil {
		return c.s.wrap("scan "+c.Name, err)
	}
	for {
		rs, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.s.wrap("scan "+c.Name, err)
		}
		rows, err := c.readRows(rs)
		if err != nil {
			return err
		}
		if prefix != "" {
			rows = slices.DeleteFunc(rows, func(r Row) bool { return !strings.HasPrefix(r.URI, prefix) })
		}
		if len(rows) == 0 {
			continue
		}
		if err := fn(rows); err != nil {
			return err
		}
	}
}

// Count returns the number of rows (strongly consistent).
func (c *Collection) Count(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	rs, err := c.s.c.Query(ctx, milvusclient.NewQueryOption(c.Name).WithOutputFields("count(*)").
		WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		return 0, c.s.wrap("count "+c.Name, err)
	}
	return rs.GetColumn("count(*)").GetAsInt64(0)
}

// Drop removes model's collection and every vector in it. Dropping a
// missing collection is not an error; one that a switch made the active
// version of any model (by whatever spelling of its name) is refused, as
// Retire refuses it.
func (s *Store) Drop(ctx context.Context, model string) error {
	name := CollectionName(model)
	if err := s.refuseActive(ctx, name); err != nil {
		return err
	}
	has, err := s.c.HasCollection(ctx, milvusclient.NewHasCollectionOption(name))
	if err != nil {
		return s.wrap("has collection "+name, err)
	}
	if !has {
		return nil
	}
	if err := s.c.DropCollection(ctx, milvusclient.NewDropCollectionOption(name)); err != nil {
		return s.wrap("drop collection "+name, err)
	}
	return nil
}

// DeleteObjects removes the rows of the given object URIs from every
// collection of model (each version's: an object gone from the source goes
// from the active version and from one being built); a model without a
// collection has nothing to delete.
func (s *Store) DeleteObjects(ctx context.Context, model string, uris []string) error {
	names, err := s.listCollections(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, len(uris))
	for i, u := range uris {
		ids[i] = ID(u)
	}
	for _, n := range names {
		if !ofTarget(n, model) {
			continue
		}
		col, err := s.openNamed(ctx, n, model)
		if err != nil {
			return err
		}
		if err := col.Delete(ctx, ids); err != nil {
			return err
		}
	}
	return nil
}

// Open returns the collection that answers model's queries (a model name
// or a target), without creating anything: the active version's (see
// Activate), or, for a model never switched, the collection named after
// it.
func (s *Store) Open(ctx context.Context, model string) (*Collection, error) {
	act, ok, err := s.Active(ctx, model)
	if err != nil {
		return nil, err
	}
	if ok {
		col, err := s.openNamed(ctx, act.Collection, model)
		if err != nil {
			return nil, fmt.Errorf("active version %s of %s: %w", VersionTag(act.Version), model, err)
		}
		return col, nil
	}
	return s.openNamed(ctx, CollectionName(model), model)
}

// openNamed opens collection name, which holds model's vectors.
func (s *Store) openNamed(ctx context.Context, name, model string) (*Collection, error) {
	desc, err := s.c.DescribeCollection(ctx, milvusclient.NewDescribeCollectionOption(name))
	if err != nil {
		if errors.Is(err, merr.ErrCollectionNotFound) {
			return nil, fmt.Errorf("%w for model %s (collection %s): index some images first", ErrNoCollection, model, name)
		}
		return nil, s.wrap("describe collection "+name, err)
	}
	col := &Collection{s: s, Name: name, Model: model, Version: recordedVersion(desc), HasSHA256: hasField(desc, FieldSHA256), id: desc.ID}
	for _, f := range desc.Schema.Fields {
		if f.Name == FieldVector {
			d, _ := f.GetDim()
			col.Dim = int(d)
		}
	}
	return col, nil
}

// RowMeta is what verification compares for one stored object.
type RowMeta struct {
	ETag         string
	ModelVersion string
}

// Lookup returns the stored ETag and model version of each of ids that has
// a row.
func (c *Collection) Lookup(ctx context.Context, ids []string) (map[string]RowMeta, error) {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.CallTimeout)
	defer cancel()
	out := make(map[string]RowMeta, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	// Strings that are not ids have no row, and are not sent.
	valid := validIDs(ids)
	// In chunks, each with a limit of its own: a Milvus server limits a
	// query by primary keys to as many rows as keys, and copies under one
	// id (which only inserts make) would push other ids out.
	for len(valid) > 0 {
		chunk := valid[:min(len(valid), lookupChunk)]
		valid = valid[len(chunk):]
		expr, err := idsFilter(chunk)
		if err != nil {
			return nil, fmt.Errorf("vecstore: lookup in %s: %w", c.Name, err)
		}
		rs, err := c.s.c.Query(ctx, milvusclient.NewQueryOption(c.Name).WithFilter(expr).WithLimit(MaxTopK).
			WithOutputFields(FieldID, FieldETag, FieldModelVersion).WithConsistencyLevel(entity.ClStrong))
		if err != nil {
			return nil, c.s.wrap("lookup in "+c.Name, err)
		}
		idc, etc, vc := rs.GetColumn(FieldID), rs.GetColumn(FieldETag), rs.GetColumn(FieldModelVersion)
		for i := 0; i < rs.ResultCount; i++ {
			id, _ := idc.GetAsString(i)
			et, _ := etc.GetAsString(i)
			v, _ := vc.GetAsString(i)
			out[id] = RowMeta{ETag: et, ModelVersion: v}
		}
	}
	return out, nil
}

// lookupChunk is the most ids one Lookup query asks for: a quarter of the
// query's limit, room for copies.
const lookupChunk = MaxTopK / 4

// EachWithPrefix calls fn with the id and URI of every row whose URI starts
// with prefix, byte for byte: LIKE's wildcards in prefix match only
// themselves, and every row the server returns is checked again here.
func (c *Collection) EachWithPrefix(ctx context.Context, prefix string, fn func(id, uri string) error) error {
	expr := uriPrefixFilter(prefix)
	it, err := c.s.c.QueryIterator(ctx, milvusclient.NewQueryIteratorOption(c.Name).WithFilter(expr).
		WithOutputFields(FieldID, FieldURI).WithBatchSize(1000).WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		return c.s.wrap("iterate "+c.Name, err)
	}
	for {
		rs, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.s.wrap("iterate "+c.Name, err)
		}
		idc, uc := rs.GetColumn(FieldID), rs.GetColumn(FieldURI)
		for i := 0; i < rs.ResultCount; i++ {
			id, _ := idc.GetAsString(i)
			u, _ := uc.GetAsString(i)
			if !strings.HasPrefix(u, prefix) {
				continue
			}
			if err := fn(id, u); err != nil {
				return err
			}
		}
	}
}
