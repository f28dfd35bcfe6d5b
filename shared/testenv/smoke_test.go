package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestMinIOSmoke puts, lists and gets objects through minio-go against a real
// MinIO server.
func TestMinIOSmoke(t *testing.T) {
	t.Parallel()
	m := testenv.StartMinIO(t)
	ctx := ctxFor(t)

	objects := map[string]string{
		"photos/b.jpg": "second",
		"photos/a.jpg": "first",
		"photos/c.jpg": "third",
		"other/x.jpg":  "not under the prefix",
	}
	for key, body := range objects {
		if _, err := m.Client.PutObject(ctx, m.Bucket, key, strings.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{ContentType: "image/jpeg"}); err != nil {
			t.Fatalf("minio at %s: put %s: %v", m.Endpoint, key, err)
		}
	}

	var keys []string
	for obj := range m.Client.ListObjects(ctx, m.Bucket, minio.ListObjectsOptions{Prefix: "photos/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("minio at %s: list: %v", m.Endpoint, obj.Err)
		}
		if obj.ETag == "" || obj.Size != int64(len(objects[obj.Key])) {
			t.Errorf("list %s: etag %q size %d, want an etag and size %d", obj.Key, obj.ETag, obj.Size, len(objects[obj.Key]))
		}
		keys = append(keys, obj.Key)
	}
	if want := []string{"photos/a.jpg", "photos/b.jpg", "photos/c.jpg"}; !slices.Equal(keys, want) {
		t.Fatalf("list photos/: got %v, want %v (sorted, prefix only)", keys, want)
	}

	obj, err := m.Client.GetObject(ctx, m.Bucket, "photos/b.jpg", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("minio at %s: get: %v", m.Endpoint, err)
	}
	defer obj.Close()
	body, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("minio at %s: read: %v", m.Endpoint, err)
	}
	if string(body) != "second" {
		t.Fatalf("get photos/b.jpg = %q, want %q", body, "second")
	}

	_, err = m.Client.StatObject(ctx, m.Bucket, "photos/missing.jpg", minio.StatObjectOptions{})
	if code := minio.ToErrorResponse(err).Code; code != "NoSuchKey" {
		t.Fatalf("stat of a missing key: got %v (code %q), want NoSuchKey", err, code)
	}
}

// TestJetStreamSmoke publishes to a work-queue stream, pulls, acks, naks
// and sees the nak'd message come back, checks publish deduplication, and
// puts and gets a KV entry, on an in-process JetStream server.
func TestJetStreamSmoke(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATS(t)
	ctx := ctxFor(t)
	name := testenv.Name(t, "jobs")
	subject := name + ".work"

	stream, err := n.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{subject},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatalf("nats at %s: create stream: %v", n.URL, err)
	}
	for i := range 3 {
		ack, err := n.JS.Publish(ctx, subject, fmt.Appendf(nil, "job-%d", i), jetstream.WithMsgID(fmt.Sprintf("run1-%d", i)))
		if err != nil {
			t.Fatalf("nats at %s: publish: %v", n.URL, err)
		}
		if ack.Duplicate {
			t.Fatalf("first publish of run1-%d reported as duplicate", i)
		}
	}
	dup, err := n.JS.Publish(ctx, subject, []byte("job-0 again"), jetstream.WithMsgID("run1-0"))
	if err != nil {
		t.Fatalf("nats at %s: republish: %v", n.URL, err)
	}
	if !dup.Duplicate {
		t.Fatal("republish with the same Nats-Msg-Id was stored again; want it deduplicated")
	}

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "workers",
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   30 * time.Second,
	})
	if err != nil {
		t.Fatalf("nats at %s: create consumer: %v", n.URL, err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("nats at %s: fetch: %v", n.URL, err)
	}
	var got []string
	for msg := range batch.Messages() {
		got = append(got, string(msg.Data()))
		if string(msg.Data()) == "job-1" {
			if err := msg.Nak(); err != nil {
				t.Fatalf("nak: %v", err)
			}
			continue
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if batch.Error() != nil {
		t.Fatalf("fetch: %v", batch.Error())
	}
	if want := []string{"job-0", "job-1", "job-2"}; !slices.Equal(got, want) {
		t.Fatalf("fetched %v, want %v", got, want)
	}

	redelivered, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("nats at %s: the nak'd message did not come back: %v", n.URL, err)
	}
	meta, err := redelivered.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if string(redelivered.Data()) != "job-1" || meta.NumDelivered != 2 {
		t.Fatalf("redelivered %q with NumDelivered %d, want job-1 delivered twice", redelivered.Data(), meta.NumDelivered)
	}
	if err := redelivered.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("work queue holds %d messages after every ack, want 0", info.State.Msgs)
	}

	kv, err := n.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: testenv.Name(t, "kv")})
	if err != nil {
		t.Fatalf("nats at %s: create kv: %v", n.URL, err)
	}
	rev, err := kv.Put(ctx, "run.latest", []byte("run-42"))
	if err != nil {
		t.Fatalf("kv put: %v", err)
	}
	entry, err := kv.Get(ctx, "run.latest")
	if err != nil {
		t.Fatalf("kv get: %v", err)
	}
	if string(entry.Value()) != "run-42" || entry.Revision() != rev {
		t.Fatalf("kv get = %q rev %d, want run-42 rev %d", entry.Value(), entry.Revision(), rev)
	}
	if _, err := kv.Get(ctx, "run.missing"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("kv get of a missing key: %v, want ErrKeyNotFound", err)
	}
}

// TestNATSProcessKillRestart kills a real nats-server process with SIGKILL
// and restarts it on the same store: every acknowledged publish survives.
func TestNATSProcessKillRestart(t *testing.T) {
	t.Parallel()
	n := testenv.StartNATSProcess(t)
	ctx := ctxFor(t)
	name := testenv.Name(t, "jobs")

	if _, err := n.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{name}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("nats at %s: create stream: %v", n.URL, err)
	}
	for i := range 5 {
		if _, err := n.JS.Publish(ctx, name, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatalf("nats at %s: publish: %v", n.URL, err)
		}
	}

	n.Kill(t)
	if err := n.Ping(ctx); err == nil {
		t.Fatal("ping succeeded while nats-server was killed")
	}
	n.Restart(t)

	var info *jetstream.StreamInfo
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := n.JS.Stream(ctx, name)
		if err == nil {
			if info, err = s.Info(ctx); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats at %s: stream not back after restart: %v", n.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info.State.Msgs != 5 {
		t.Fatalf("after SIGKILL and restart the stream holds %d messages, want 5", info.State.Msgs)
	}
	if n.Conn.Status() != nats.CONNECTED {
		t.Fatalf("client status %v after restart, want CONNECTED", n.Conn.Status())
	}
}

// TestMilvusSmoke creates a collection, upserts, indexes, loads, searches,
// queries by id and deletes through milvus/client/v2 against milvus-lite, and
// checks that a server-side refusal surfaces as an error.
func TestMilvusSmoke(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	ctx := ctxFor(t)
	c := mv.Client
	coll := testenv.Name(t, "coll")

	schema := entity.NewSchema().WithName(coll).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeVarChar).WithMaxLength(64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("size").WithDataType(entity.FieldTypeInt64)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(coll, schema).
		WithConsistencyLevel(entity.ClStrong)); err != nil {
		t.Fatalf("milvus at %s: create collection: %v", mv.Addr, err)
	}

	upsert := func(ids []string, sizes []int64, vecs [][]float32) {
		t.Helper()
		res, err := c.Upsert(ctx, milvusclient.NewColumnBasedInsertOption(coll).
			WithVarcharColumn("id", ids).WithInt64Column("size", sizes).WithFloatVectorColumn("vec", 4, vecs))
		if err != nil {
			t.Fatalf("milvus at %s: upsert: %v", mv.Addr, err)
		}
		if res.UpsertCount != int64(len(ids)) {
			t.Fatalf("upsert count %d, want %d", res.UpsertCount, len(ids))
		}
	}
	upsert([]string{"a", "b", "c"}, []int64{10, 20, 30}, [][]float32{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}})

	task, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(coll, "vec", index.NewAutoIndex(entity.COSINE)))
	if err != nil {
		t.Fatalf("milvus at %s: create index: %v", mv.Addr, err)
	}
	if err := task.Await(ctx); err != nil {
		t.Fatalf("milvus at %s: index build: %v", mv.Addr, err)
	}
	load, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(coll))
	if err != nil {
		t.Fatalf("milvus at %s: load: %v", mv.Addr, err)
	}
	if err := load.Await(ctx); err != nil {
		t.Fatalf("milvus at %s: load: %v", mv.Addr, err)
	}

	// Upserting an existing key replaces its row: b now points along c's axis.
	upsert([]string{"b"}, []int64{21}, [][]float32{{0, 0.1, 1, 0}})

	rs, err := c.Search(ctx, milvusclient.NewSearchOption(coll, 2, []entity.Vector{entity.FloatVector([]float32{0, 0, 1, 0.01})}).
		WithANNSField("vec").WithOutputFields("size").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatalf("milvus at %s: search: %v", mv.Addr, err)
	}
	if len(rs) != 1 || rs[0].ResultCount != 2 {
		t.Fatalf("search returned %d result sets (first with %d hits), want 1 with 2", len(rs), rs[0].ResultCount)
	}
	first, _ := rs[0].IDs.GetAsString(0)
	second, _ := rs[0].IDs.GetAsString(1)
	if first != "c" || second != "b" {
		t.Fatalf("search ranked %q, %q; want c then b", first, second)
	}
	if rs[0].Scores[0] < rs[0].Scores[1] || rs[0].Scores[0] < 0.99 {
		t.Fatalf("cosine scores %v: want the first near 1 and not below the second", rs[0].Scores)
	}

	count := func() int {
		t.Helper()
		res, err := c.Query(ctx, milvusclient.NewQueryOption(coll).WithFilter(`size > 0`).
			WithOutputFields("id").WithConsistencyLevel(entity.ClStrong))
		if err != nil {
			t.Fatalf("milvus at %s: query: %v", mv.Addr, err)
		}
		return res.ResultCount
	}
	if n := count(); n != 3 {
		t.Fatalf("%d rows after upserting an existing key, want 3 (upsert must not duplicate)", n)
	}

	res, err := c.Query(ctx, milvusclient.NewQueryOption(coll).WithFilter(`id in ["b"]`).
		WithOutputFields("size").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatalf("milvus at %s: query by id: %v", mv.Addr, err)
	}
	size, err := res.GetColumn("size").GetAsInt64(0)
	if err != nil || res.ResultCount != 1 || size != 21 {
		t.Fatalf("query by id b: %d rows, size %d (%v); want 1 row with size 21", res.ResultCount, size, err)
	}

	del, err := c.Delete(ctx, milvusclient.NewDeleteOption(coll).WithStringIDs("id", []string{"a"}))
	if err != nil {
		t.Fatalf("milvus at %s: delete: %v", mv.Addr, err)
	}
	if del.DeleteCount != 1 {
		t.Fatalf("delete count %d, want 1", del.DeleteCount)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d rows after deleting one of 3, want 2", n)
	}

	// The lite server refuses HNSW. The client must report that refusal as
	// an error (the archived milvus-sdk-go reported it as success).
	refused := testenv.Name(t, "refused")
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(refused,
		entity.NewSchema().WithName(refused).
			WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(4)))); err != nil {
		t.Fatalf("milvus at %s: create collection: %v", mv.Addr, err)
	}
	task, err = c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(refused, "vec", index.NewHNSWIndex(entity.COSINE, 16, 64)))
	if err == nil {
		err = task.Await(ctx)
	}
	if err == nil {
		t.Fatal("milvus-lite accepted an HNSW index, or the client hid its refusal; want an error")
	}
	t.Logf("HNSW refused as expected: %v", err)
}

// TestStoppedServersAreNamed stops each server and checks that the next
// call fails with an error that names the server and says why.
func TestStoppedServersAreNamed(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	type pinger interface {
		Ping(context.Context) error
		Stop()
	}
	cases := []struct {
		name  string
		start func(testing.TB) pinger
	}{
		{"minio", func(t testing.TB) pinger { return testenv.StartMinIO(t) }},
		{"milvus", func(t testing.TB) pinger { return testenv.StartMilvus(t) }},
		{"nats", func(t testing.TB) pinger { return testenv.StartNATS(t) }},
		{"nats", func(t testing.TB) pinger { return testenv.StartNATSProcess(t) }},
	}
	for _, tc := range cases {
		s := tc.start(t)
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("%s: ping before stop: %v", tc.name, err)
		}
		s.Stop()
		err := s.Ping(ctx)
		if err == nil {
			t.Fatalf("%s: ping after stop succeeded", tc.name)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, tc.name+" at 127.0.0.1:") && !strings.HasPrefix(msg, tc.name+" at nats://127.0.0.1:") {
			t.Errorf("%s: error %q does not start by naming the server and its address", tc.name, msg)
		}
		if !strings.Contains(msg, "not reachable") || !strings.Contains(msg, "connection refused") {
			t.Errorf("%s: error %q does not say why", tc.name, msg)
		}
		t.Logf("%s stopped: %v", tc.name, err)
	}
}
