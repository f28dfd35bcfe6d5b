package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/search"
	"github.com/embedfleet/embedfleet/shared/testimages"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// secondVersion writes a second version of the tiny CLIP under dir/clip-vit-b32:
// the same network with another doc string (so another sha256) and
// another normalisation (so other vectors).
func secondVersion(t *testing.T, dir string) (string, embed.Spec) {
	t.Helper()
	src := filepath.Join(tinyModels(t), "clip-vit-b32")
	onnx, err := os.ReadFile(filepath.Join(src, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	onnx = append(onnx, 0x32, 0x02, 'v', '2') // ModelProto.doc_string = "v2"
	spec, err := embed.LoadSpec(src)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(onnx)
	spec.Version = "sha256:" + hex.EncodeToString(sum[:]) // as export.py writes it
	spec.Preprocess.Mean = [3]float32{0.2, 0.3, 0.7}
	out := filepath.Join(dir, "clip-vit-b32")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(out, "model.onnx"), onnx, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, embed.SpecFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out, spec
}

// answer is one search the query loop sent during the upgrade.
type answer struct {
	sent, got time.Time
	code      int
	version   string
	hits      string // URIs and cosines, to compare answers of one version
	body      string
}

// TestBlueGreenUpgrade upgrades CLIP to a second version while a query loop
// searches through serve: old and new workers run side by side, each
// filling its own version's collection; every query is answered, none from
// the half-built new collection; activation is refused while the new
// collection is incomplete, then switches every answer to the new version;
// rollback brings the old answers back; the old collection is retired.
func TestBlueGreenUpgrade(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 40)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := c.env(t)
	v2root := t.TempDir()
	v2dir, v2spec := secondVersion(t, v2root)
	cli := func(extra []string, args ...string) (string, error) {
		return run(t, append(append([]string(nil), env...), extra...), args...)
	}
	mustCLI := func(extra []string, args ...string) string {
		t.Helper()
		out, err := cli(extra, args...)
		if err != nil {
			t.Fatalf("embedfleet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	put := func(key string, seed uint64) {
		data := testimages.JPEG(testimages.Photo(newRand(seed), 200, 300), 90)
		if _, err := c.minio.Client.PutObject(ctx, c.minio.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Version 1, the default pool.
	c.startWorker(t, "--models", "clip-vit-b32")
	mustCLI(nil, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32", "--incremental")
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: c.milvus.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	v1col, err := st.Open(ctx, "clip-vit-b32")
	if err != nil {
		t.Fatal(err)
	}
	v1 := v1col.Version

	// A query server holding both versions, and a loop of searches.
	base, _ := startServe(t, env, "--models", "clip-vit-b32,"+v2dir, "--text-models", "none")
	query := testimages.JPEG(testimages.Photo(newRand(99), 200, 300), 90)
	var mu sync.Mutex
	var answers []answer
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for loopCtx.Err() == nil {
			a := answer{sent: time.Now()}
			res, err := http.Post(base+"/v1/search?model=clip-vit-b32&k=3", "image/jpeg", bytes.NewReader(query))
			if err != nil {
				a.body = err.Error()
			} else {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				a.code, a.body = res.StatusCode, string(b)
				var r struct {
					Collection   string `json:"collection"`
					ModelVersion string `json:"model_version"`
					Hits         []search.Hit
				}
				if json.Unmarshal(b, &r) == nil {
					a.version = r.ModelVersion
					for _, h := range r.Hits {
						a.hits += fmt.Sprintf("%s=%.5f ", filepath.Base(h.URI), h.Cosine)
					}
				}
			}
			a.got = time.Now()
			mu.Lock()
			answers = append(answers, a)
			mu.Unlock()
			time.Sleep(15 * time.Millisecond)
		}
	}()
	snapshot := func() []answer {
		mu.Lock()
		defer mu.Unlock()
		return append([]answer(nil), answers...)
	}
	waitAnswers := func(after time.Time) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; {
			n := 0
			for _, a := range snapshot() {
				if a.sent.After(after) {
					n++
				}
			}
			if n >= 5 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the query loop stopped answering")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Version 2 in its own pool, beside version 1's workers. While both
	// fleets run: a new object embedded by version 1 (the default pool),
	// then the whole source by version 2 into its own collection.
	_, out2 := c.startWorker(t, "--models", v2dir, "--pool", "green")
	put("imgs/added-1.jpg", 501)
	mustCLI(nil, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32", "--incremental")
	v2env := []string{"EMBEDFLEET_MODELS_DIR=" + v2root}
	runOut := mustCLI(v2env, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32", "--incremental", "--pool", "green")
	if !strings.Contains(runOut, fmt.Sprintf("new=%d ", c.n+1)) || !strings.Contains(runOut, "new model version") {
		t.Fatalf("the version 2 run did not see a new version:\n%s", runOut)
	}
	v2col, err := st.OpenVersion(ctx, "clip-vit-b32", v2spec.Version)
	if err != nil {
		t.Fatal(err)
	}
	v2 := v2col.Version
	if v2 == v1 || v2col.Name == v1col.Name {
		t.Fatalf("version 2 wrote %s (%s), the same as version 1", v2col.Name, v2)
	}
	for _, col := range []*vecstore.Collection{v1col, v2col} {
		if n, err := col.Count(ctx); err != nil || n != int64(c.n+1) {
			t.Fatalf("%s holds %d rows (%v), want %d", col.Name, n, err, c.n+1)
		}
		meta, err := col.Lookup(ctx, []string{vecstore.ID(c.source + "added-1.jpg"), vecstore.ID(c.source + "0000.jpg")})
		if err != nil || len(meta) != 2 {
			t.Fatalf("lookup in %s: %v %v", col.Name, meta, err)
		}
		for id, m := range meta {
			if m.ModelVersion != col.Version {
				t.Fatalf("%s: row %s written by %s", col.Name, id, m.ModelVersion)
			}
		}
	}
	if strings.Contains(out2.String(), "job done") == false {
		t.Fatalf("the version 2 worker did no job:\n%s", out2.String())
	}

	// Not complete yet (an object version 2 has not embedded): refused.
	put("imgs/added-2.jpg", 502)
	tag2 := vecstore.VersionTag(v2)
	if out, err := cli(nil, "models", "activate", "--model", "clip-vit-b32", "--version", tag2, "--source", c.source); err == nil ||
		!strings.Contains(out, "not complete") || !strings.Contains(out, "missing=1") {
		t.Fatalf("activating an incomplete version: %v\n%s", err, out)
	}
	for _, a := range snapshot() {
		if a.code != http.StatusOK || a.version != v1 {
			t.Fatalf("before the switch, an answer %d from %q (want %s): %s", a.code, a.version, v1, a.body)
		}
	}
	// The version 2 run finishes it and switches (--activate verifies
	// first). The switch happens inside the command, before it closes its
	// connections and exits, so serve may answer from version 2 while the
	// command is still running: version 1 alone is certain until it starts.
	activating := time.Now()
	actOut := mustCLI(v2env, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32", "--incremental", "--pool", "green", "--activate")
	switched := time.Now()
	if !strings.Contains(actOut, "activated clip-vit-b32 version "+tag2) {
		t.Fatalf("run --activate:\n%s", actOut)
	}
	time.Sleep(search.ActiveRefresh + 500*time.Millisecond)
	waitAnswers(switched.Add(search.ActiveRefresh))

	// The query command follows the switch too: with version 1 only it
	// says which version it needs; with version 2 it answers.
	qimg := filepath.Join(t.TempDir(), "q.jpg")
	if err := os.WriteFile(qimg, query, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(nil, "query", "--model", "clip-vit-b32", "--image", qimg); err == nil || !strings.Contains(out, tag2) {
		t.Fatalf("query with only version 1 loaded, after the switch: %v\n%s", err, out)
	}
	var qhits []search.Hit
	if err := json.Unmarshal([]byte(mustCLI(v2env, "query", "--model", "clip-vit-b32", "--image", qimg, "--top-k", "3", "--json")), &qhits); err != nil {
		t.Fatal(err)
	}
	queryV2 := ""
	for _, h := range qhits {
		queryV2 += fmt.Sprintf("%s=%.5f ", filepath.Base(h.URI), h.Cosine)
	}

	// Rollback, in one command; answers go back to version 1.
	rolled := time.Now()
	if out := mustCLI(nil, "models", "rollback", "--model", "clip-vit-b32"); !strings.Contains(out, vecstore.VersionTag(v1)) {
		t.Fatalf("rollback:\n%s", out)
	}
	rolledBack := time.Now()
	time.Sleep(search.ActiveRefresh + 500*time.Millisecond)
	waitAnswers(rolledBack.Add(search.ActiveRefresh))
	stopLoop()
	<-loopDone

	// Every query was answered, each whole from one version: before the
	// activating command started version 1, from ActiveRefresh after it
	// returned version 2 until the rollback command started, from
	// ActiveRefresh after that one returned version 1 again; in between,
	// either (answers are still whole, which byVersion checks).
	byVersion := map[string]string{}
	var n1, n2, n3 int
	for _, a := range snapshot() {
		if a.code != http.StatusOK {
			t.Fatalf("a query failed during the upgrade: %d %s", a.code, a.body)
		}
		if h, ok := byVersion[a.version]; ok && h != a.hits {
			t.Fatalf("two answers of version %s differ: %q and %q (one answer mixed versions)", a.version, h, a.hits)
		}
		byVersion[a.version] = a.hits
		switch {
		case a.got.Before(activating):
			if a.version != v1 {
				t.Fatalf("before the switch an answer from %s", a.version)
			}
			n1++
		case a.sent.After(switched.Add(search.ActiveRefresh)) && a.got.Before(rolled):
			if a.version != v2 {
				t.Fatalf("after the switch an answer from %s, want %s", a.version, v2)
			}
			n2++
		case a.sent.After(rolledBack.Add(search.ActiveRefresh)):
			if a.version != v1 {
				t.Fatalf("after the rollback an answer from %s, want %s", a.version, v1)
			}
			n3++
		}
	}
	// serve embedded each query with the version of the collection that
	// answered: its version 2 answers are those of a query command that
	// has version 2 alone.
	if byVersion[v2] != queryV2 {
		t.Fatalf("serve's version 2 answer %q, the query command's %q", byVersion[v2], queryV2)
	}
	if n1 == 0 || n2 == 0 || n3 == 0 || len(byVersion) != 2 || byVersion[v1] == byVersion[v2] {
		t.Fatalf("answers: %d before, %d after the switch, %d after the rollback; by version %v", n1, n2, n3, byVersion)
	}
	t.Logf("%d answers: %d from version 1 before the switch, %d from version 2, %d after the rollback", len(snapshot()), n1, n2, n3)

	// The versions, and retiring: never the active one.
	list := mustCLI(nil, "models", "versions", "--model", "clip-vit-b32")
	if !strings.Contains(list, "active") || !strings.Contains(list, "previous") || !strings.Contains(list, v2col.Name) {
		t.Fatalf("models versions:\n%s", list)
	}
	// Not by any spelling of the model: its name, its collection's name
	// (the COLLECTION column), a version's collection as --model.
	for _, args := range [][]string{
		{"--model", "clip-vit-b32", "--version", vecstore.VersionTag(v1)},
		{"--model", "clip_vit_b32", "--version", vecstore.VersionTag(v1)},
		{"--model", "clip_vit_b32", "--version", v1col.Name},
		{"--model", "clip-vit-b32", "--version", v1col.Name},
	} {
		if out, err := cli(nil, append([]string{"models", "retire"}, args...)...); err == nil || !strings.Contains(out, "active version") {
			t.Fatalf("retiring the active version (%s) succeeded or did not say why: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if n, err := v1col.Count(ctx); err != nil || n == 0 {
		t.Fatalf("the active collection after the refused retires: %d rows (%v)", n, err)
	}
	mustCLI(nil, "models", "rollback", "--model", "clip_vit_b32") // the same model, by its collection's name
	if out, err := cli(nil, "models", "retire", "--model", v2col.Name); err == nil || !strings.Contains(out, "active version") {
		t.Fatalf("retiring version 2, active, named by its collection: %v\n%s", err, out)
	}
	// Before version 1 is retired, its manifest says what it stored: an
	// incremental run of it would embed nothing. Retiring forgets it.
	if out := mustCLI(nil, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32", "--incremental", "--dry-run"); !regexp.MustCompile(`unchanged=[1-9]`).MatchString(out) {
		t.Fatalf("dry run of version 1 before it is retired:\n%s", out)
	}
	mustCLI(nil, "models", "retire", "--model", "clip_vit_b32", "--version", v1col.Name)
	vs, err := st.Versions(ctx, "clip-vit-b32")
	if err != nil || len(vs) != 1 || vs[0].Collection != v2col.Name || !vs[0].Active {
		t.Fatalf("after retiring version 1: %+v (%v)", vs, err)
	}
	if out := mustCLI(nil, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32", "--incremental", "--dry-run"); !strings.Contains(out, "unchanged=0") {
		t.Fatalf("dry run of the retired version 1: its manifest outlived the retire (it would embed nothing):\n%s", out)
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed+1)) }
