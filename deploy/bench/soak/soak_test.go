// Package soak is `make soak`: the whole system on real servers at a size
// set by SOAK_OBJECTS (default 1,000,000), with faults, as separate
// processes: MinIO, a nats-server with file storage, milvus-lite, 3
// `embedfleet worker` processes and `embedfleet coordinator run
// --incremental`, with the two tiny test models.
//
// NATS is a JetStream cluster of 3 nats-server processes on loopback,
// streams and buckets at 3 replicas, as the Helm chart runs it
// (SOAK_NATS_NODES=1: one nats-server instead).
//
// During the run a random worker is SIGKILLed and restarted every
// SOAK_KILL_EVERY (default 60 s, and at least at 15, 45 and 75% of the
// jobs), the node that leads the jobs stream (the one nats-server) is
// SIGKILLed once (at 30%) and restarted, and milvus-lite is stopped for
// 20 s once (at 60%). At the end `embedfleet
// verify` must report nothing missing, stale or extra for both models, and
// each collection must hold exactly the objects less the planted bad ones.
// Then 1% of the objects change, 1% are added and 1% deleted, and an
// incremental run must embed and delete exactly those. Every process's RSS
// is sampled every 2 s. It prints
//
//	soak objects=.. stored=.. failed=.. lost=.. duplicated=.. wall_s=.. img_s=.. worker_rss_mb_max=.. coordinator_rss_mb_max=.. kills=.. nats_restarts=.. milvus_outages=..
//	soak_config job_size=.. upsert_rows=.. workers=.. nats_nodes=.. upload_s=..
//	soak_control jobs=.. publish_jobs_s=.. listing_s=.. upserts_s=.. verify_objects_s=..
//	soak_incremental changed=.. added=.. deleted=.. embedded=.. removed=.. wall_s=.. ok=..
//
// SOAK_UPSERT_ROWS sets the workers' --upsert-rows (default 1024; 32, the
// batch size, writes every batch alone as before group commit).
// SOAK_JOB_SIZE sets the coordinator's --job-size (default 256): a worker's
// group commit can only gather what it holds, --prefetch (2) jobs, so on a
// store whose writes slow down as it grows larger jobs give larger writes.
//
// Every server keeps its data under TMPDIR. With TMPDIR=/dev/shm (about 5
// GB of memory per million objects, MinIO's share) 15,000 objects uploaded
// in 13-19 s against 23 s on the dev machine's disk: a soak measures the
// system, not the disk under its test MinIO.
//
// Run: SOAK_OBJECTS=20000 go test -run '^$' -bench Soak -benchtime 1x -timeout 120m ./deploy/bench/soak
package soak

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/stack"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

var models = []string{"clip-vit-b32", "dinov2-base"}

func jobSize() int    { return envInt("SOAK_JOB_SIZE", 256) }
func upsertRows() int { return envInt("SOAK_UPSERT_ROWS", 1024) }
func natsNodes() int  { return envInt("SOAK_NATS_NODES", 3) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// object i's bytes: a small distinct image in one of several sizes and
// formats, or (every 997th) a truncated JPEG and (every 1999th) text: the
// planted failures. gen is the object's generation (a changed object has
// other bytes).
func object(i, gen int) (data []byte, bad bool) {
	if i%1999 == 1998 {
		return []byte(fmt.Sprintf("not an image, object %d, generation %d\n", i, gen)), true
	}
	r := rand.New(rand.NewPCG(uint64(i), uint64(gen)))
	sizes := [][2]int{{24, 24}, {40, 30}, {64, 48}, {33, 57}}
	sz := sizes[i%len(sizes)]
	m := image.NewRGBA(image.Rect(0, 0, sz[0], sz[1]))
	c := color.RGBA{uint8(r.IntN(256)), uint8(r.IntN(256)), uint8(r.IntN(256)), 255}
	for y := range sz[1] {
		for x := range sz[0] {
			m.SetRGBA(x, y, color.RGBA{c.R + uint8(x*3), c.G + uint8(y*5), c.B ^ uint8(x*y), 255})
		}
	}
	var b bytes.Buffer
	switch format(i) {
	case 3:
		_ = png.Encode(&b, m)
	case 4:
		_ = gif.Encode(&b, m, nil)
	default:
		_ = jpeg.Encode(&b, m, &jpeg.Options{Quality: 80})
		// A comment naming the object and generation, just after SOI, so
		// that every generation's bytes differ within the first half too:
		// the truncated objects keep only that half, and the incremental
		// check counts each changed object as re-embedded.
		note := fmt.Sprintf("object %d generation %d", i, gen)
		com := append([]byte{0xFF, 0xFE, byte((len(note) + 2) >> 8), byte(len(note) + 2)}, note...)
		full := slices.Clone(b.Bytes())
		b.Reset()
		b.Write(full[:2])
		b.Write(com)
		b.Write(full[2:])
	}
	data = b.Bytes()
	if i%997 == 996 {
		return data[:len(data)/2], true
	}
	return data, false
}

// format is object i's format: 0-2 JPEG, 3 PNG, 4 GIF; the truncated ones
// are JPEGs, whose generation comment survives the cut.
func format(i int) int {
	if i%997 == 996 {
		return 0
	}
	return i % 5
}

func key(i int) string {
	ext := [...]string{".jpg", ".jpg", ".jpg", ".png", ".gif"}[format(i)]
	if i%1999 == 1998 {
		ext = ".jpg"
	}
	return fmt.Sprintf("soak/%03d/%08d%s", i%1000, i, ext)
}

type proc struct {
	cmd  *exec.Cmd
	out  *os.File
	name string
}

type soak struct {
	b          *testing.B
	bin        string
	env        []string
	logs       string
	mu         sync.Mutex
	workers    []*proc
	coordPID   atomic.Int64
	workerRSS  atomic.Int64 // KiB, max
	coordRSS   atomic.Int64
	kills      atomic.Int64
	natsKills  atomic.Int64
	milvusDown atomic.Int64
}

func (s *soak) start(name string, args ...string) *proc {
	s.b.Helper()
	f, err := os.Create(filepath.Join(s.logs, name+".log"))
	if err != nil {
		s.b.Fatal(err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		s.b.Fatal(err)
	}
	return &proc{cmd: cmd, out: f, name: name}
}

func (s *soak) startWorker(i int) *proc {
	return s.start(fmt.Sprintf("worker%d-%d", i, time.Now().UnixNano()), "worker", "--models", strings.Join(models, ","),
		"--batch-size", "32", "--upsert-rows", strconv.Itoa(upsertRows()), "--ack-wait", "20s", "--log-level", "warn", "--prep-workers", "2")
}

func maxInto(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func (s *soak) sampleRSS(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		for _, w := range s.workers {
			maxInto(&s.workerRSS, stack.RSSKiB(w.cmd.Process.Pid))
		}
		s.mu.Unlock()
		if pid := s.coordPID.Load(); pid > 0 {
			maxInto(&s.coordRSS, stack.RSSKiB(int(pid)))
		}
	}
}

func BenchmarkSoak(b *testing.B) {
	n := envInt("SOAK_OBJECTS", 1_000_000)
	killEvery := time.Duration(envInt("SOAK_KILL_EVERY", 60)) * time.Second
	root, err := testenv.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "embedfleet")
	if _, err := os.Stat(bin); err != nil {
		b.Fatalf("%s: %v (make build)", bin, err)
	}
	m := testenv.StartMinIO(b)
	ns := startNATS(b, natsNodes())
	mv := testenv.StartMilvus(b)
	ctx := context.Background()
	prefix := "SOAK"
	s := &soak{b: b, bin: bin, logs: b.TempDir(), env: []string{
		"EMBEDFLEET_NATS_REPLICAS=" + strconv.Itoa(ns.replicas()),
		"EMBEDFLEET_ORT_LIB=" + testenv.Binary(b, testenv.EnvORTLib),
		"EMBEDFLEET_MODELS_DIR=" + filepath.Join(root, "shared", "embed", "testdata", "models"),
		"EMBEDFLEET_NATS_URL=" + ns.URL, "EMBEDFLEET_PREFIX=" + prefix, "EMBEDFLEET_MILVUS_ADDR=" + mv.Addr,
		"EMBEDFLEET_S3_ENDPOINT=" + m.Endpoint, "EMBEDFLEET_S3_INSECURE=true", "EMBEDFLEET_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
	}}
	source := "s3://" + m.Bucket + "/soak/"

	// The objects.
	t0 := time.Now()
	bad := put(b, m, 0, n, 0)
	uploadS := time.Since(t0).Seconds()
	fmt.Fprintf(os.Stderr, "soak: %d objects in MinIO (%d planted bad) in %.0f s\n", n, bad, uploadS)

	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go s.sampleRSS(sctx)
	for i := range 3 {
		s.workers = append(s.workers, s.startWorker(i))
	}
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, w := range s.workers {
			_ = w.cmd.Process.Kill()
			_ = w.cmd.Wait()
		}
	}()

	// The first run, with faults.
	start := time.Now()
	coord := s.start("coordinator", "coordinator", "run", "--source", source, "--models", strings.Join(models, ","),
		"--incremental", "--job-size", strconv.Itoa(jobSize()), "--log-level", "warn")
	s.coordPID.Store(int64(coord.cmd.Process.Pid))
	done := make(chan error, 1)
	go func() { done <- coord.cmd.Wait() }()
	topo := bus.Topology{Prefix: prefix}
	chaos := newChaos(s, ns, mv, topo, killEvery)
	var firstErr error
	publishedAt := time.Duration(0)
	jobsTotal := int64(0)
	tick := time.NewTicker(time.Second)
	for waiting := true; waiting; {
		select {
		case firstErr = <-done:
			waiting = false
		case <-tick.C:
			rec, ok := runRecord(ctx, ns, topo)
			if ok && rec.Enumerated && publishedAt == 0 {
				publishedAt, jobsTotal = time.Since(start), rec.Jobs
			}
			if ok && rec.Jobs > 0 {
				chaos.step(b, float64(results(ctx, ns, topo))/float64(max(rec.Jobs, 1)))
			}
		}
	}
	tick.Stop()
	wall := time.Since(start)
	s.coordPID.Store(0)
	if firstErr != nil {
		b.Fatalf("coordinator run: %v\n%s", firstErr, tail(coord.out.Name(), 30))
	}
	expected := int64(n - bad)
	counts := rowCounts(b, ctx, mv.Addr)
	// stored is the first model's rows; lost and duplicated add up every
	// model's shortfall and excess, so a miscount in any collection shows.
	stored := counts[models[0]]
	var lost, dup int64
	for _, mdl := range models {
		lost += max(0, expected-counts[mdl])
		dup += max(0, counts[mdl]-expected)
		if counts[mdl] != expected {
			b.Errorf("%s holds %d rows, want exactly %d (%d objects less %d planted bad)", mdl, counts[mdl], expected, n, bad)
		}
	}
	vt := time.Now()
	vout, verr := s.run("verify", "--source", source, "--models", strings.Join(models, ","))
	verifyRate := float64(n) / time.Since(vt).Seconds()
	if verr != nil || strings.Count(vout, "missing=0 stale=0 extra=0") != len(models) || strings.Count(vout, " duplicated=0") != len(models) {
		b.Errorf("verify: %v\n%s", verr, vout)
	}
	if dup > 0 {
		// Rows stored twice under one id: verify must have named them, and
		// its repair must leave each collection exact.
		rout, rerr := s.run("verify", "--source", source, "--models", strings.Join(models, ","), "--repair")
		after := rowCounts(b, ctx, mv.Addr)
		for _, mdl := range models {
			if after[mdl] != expected {
				b.Errorf("after verify --repair %s holds %d rows, want %d", mdl, after[mdl], expected)
			}
		}
		fmt.Printf("soak_repair duplicated_rows=%d rows_after=%v repair_ok=%v\n", dup, after, rerr == nil)
		if rerr != nil {
			b.Errorf("verify --repair: %v\n%s", rerr, rout)
		}
	}
	stopSampling()
	fmt.Printf("soak objects=%d stored=%d failed=%d lost=%d duplicated=%d wall_s=%.0f img_s=%.1f worker_rss_mb_max=%d coordinator_rss_mb_max=%d kills=%d nats_restarts=%d milvus_outages=%d\n",
		n, stored, bad, lost, dup, wall.Seconds(), float64(stored)/wall.Seconds(), s.workerRSS.Load()/1024, s.coordRSS.Load()/1024,
		s.kills.Load(), s.natsKills.Load(), s.milvusDown.Load())
	publishRate := 0.0
	if publishedAt > 0 {
		publishRate = float64(jobsTotal) / publishedAt.Seconds()
	}
	fmt.Printf("soak_control jobs=%d publish_jobs_s=%.0f listing_s=%.0f upserts_s=%.0f verify_objects_s=%.0f\n",
		jobsTotal, publishRate, publishedAt.Seconds(), float64(stored*int64(len(models)))/wall.Seconds(), verifyRate)
	fmt.Printf("soak_config job_size=%d upsert_rows=%d workers=%d nats_nodes=%d upload_s=%.0f\n",
		jobSize(), upsertRows(), len(s.workers), ns.nodes, uploadS)

	// 1% changed, 1% added, 1% deleted: exactly those are embedded and removed.
	onePct := max(1, n/100)
	for j := range onePct {
		i := j * 100 // spread over the listing
		data, _ := object(i, 1)
		if _, err := m.Client.PutObject(ctx, m.Bucket, key(i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	addedBad := put(b, m, n, n+onePct, 0)
	var deleted int
	for j := range onePct {
		i := j*100 + 50
		if _, isBad := object(i, 0); isBad {
			continue // deleting a failed object deletes no row
		}
		if err := m.Client.RemoveObject(ctx, m.Bucket, key(i), minio.RemoveObjectOptions{}); err != nil {
			b.Fatal(err)
		}
		deleted++
	}
	it := time.Now()
	iout, ierr := s.run("coordinator", "run", "--source", source, "--models", strings.Join(models, ","), "--incremental", "--job-size", strconv.Itoa(jobSize()), "--log-level", "warn")
	iwall := time.Since(it)
	want := fmt.Sprintf("new=%d changed=%d", onePct, onePct)
	ok := ierr == nil
	for _, mdl := range models {
		line := regexp.MustCompile(`diff ` + mdl + `: new=(\d+) changed=(\d+) unchanged=\d+ deleted=(\d+)`).FindStringSubmatch(iout)
		if line == nil {
			ok = false
			b.Errorf("incremental run printed no diff for %s:\n%s", mdl, iout)
			continue
		}
		// Changed counts every re-uploaded object whose ETag changed, the
		// planted-bad ones included (their record is per ETag); deleted
		// counts the rows of objects gone from the listing.
		if !strings.Contains(line[0], want) || line[3] != strconv.Itoa(deleted) {
			ok = false
			b.Errorf("%s: %s, want %s and deleted=%d", mdl, line[0], want, deleted)
		}
	}
	expected2 := expected - int64(deleted) + int64(onePct-addedBad)
	// Whether an object is bad depends on its index alone, so a changed
	// object keeps its row (or its recorded failure).
	counts2 := rowCounts(b, ctx, mv.Addr)
	for _, mdl := range models {
		if counts2[mdl] != expected2 {
			ok = false
			b.Errorf("after the incremental run %s holds %d rows, want %d", mdl, counts2[mdl], expected2)
		}
	}
	vout, verr = s.run("verify", "--source", source, "--models", strings.Join(models, ","))
	if verr != nil || strings.Count(vout, "missing=0 stale=0 extra=0") != len(models) {
		ok = false
		b.Errorf("verify after the incremental run: %v\n%s", verr, vout)
	}
	fmt.Printf("soak_incremental changed=%d added=%d deleted=%d wall_s=%.1f ok=%v\n", onePct, onePct, deleted, iwall.Seconds(), ok)
}

// put uploads objects [from, to) of generation gen with 32 goroutines and
// returns how many are planted bad.
func put(b *testing.B, m *testenv.MinIO, from, to, gen int) int {
	ctx := context.Background()
	var wg sync.WaitGroup
	var bad atomic.Int64
	next := make(chan int, 256)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				data, isBad := object(i, gen)
				if isBad {
					bad.Add(1)
				}
				for try := 0; ; try++ {
					_, err := m.Client.PutObject(ctx, m.Bucket, key(i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
					if err == nil {
						break
					}
					if try == 5 {
						b.Error(err)
						break
					}
					time.Sleep(time.Second)
				}
			}
		}()
	}
	last := time.Now()
	for i := from; i < to; i++ {
		next <- i
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "soak: uploaded %d/%d\n", i-from, to-from)
		}
	}
	close(next)
	wg.Wait()
	return int(bad.Load())
}

func (s *soak) run(args ...string) (string, error) {
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func runRecord(ctx context.Context, ns *natsUnderTest, topo bus.Topology) (jobs.Run, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := ns.JS.KeyValue(ctx, topo.RunsBucket())
	if err != nil {
		return jobs.Run{}, false
	}
	var latest jobs.Run
	found := false
	ks, err := kv.ListKeys(ctx)
	if err != nil {
		return jobs.Run{}, false
	}
	for k := range ks.Keys() {
		if !strings.HasPrefix(k, "run_") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		r, err := jobs.Decode[jobs.Run](e.Value())
		if err == nil && (!found || r.Started.After(latest.Started)) {
			latest, found = r, true
		}
	}
	return latest, found
}

// results is how many job results the results stream holds.
func results(ctx context.Context, ns *natsUnderTest, topo bus.Topology) int64 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := ns.JS.Stream(ctx, topo.ResultsStream())
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return int64(info.State.Msgs)
}

func rowCounts(b *testing.B, ctx context.Context, addr string) map[string]int64 {
	st, err := vecstore.Connect(ctx, vecstore.Config{Address: addr})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close(ctx)
	out := map[string]int64{}
	for _, mdl := range models {
		col, err := st.Open(ctx, mdl)
		if err != nil {
			b.Fatal(err)
		}
		if out[mdl], err = col.Count(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// chaos injects the faults as the run progresses.
type chaos struct {
	s         *soak
	ns        *natsUnderTest
	mv        *testenv.Milvus
	topo      bus.Topology
	every     time.Duration
	lastKill  time.Time
	marks     []float64 // progress points at which a worker is killed
	natsDone  bool
	milvusOff time.Time
	milvusWas bool
	r         *rand.Rand
}

func newChaos(s *soak, ns *natsUnderTest, mv *testenv.Milvus, topo bus.Topology, every time.Duration) *chaos {
	return &chaos{s: s, ns: ns, mv: mv, topo: topo, every: every, lastKill: time.Now(), marks: []float64{0.15, 0.45, 0.75}, r: rand.New(rand.NewPCG(9, 9))}
}

func (c *chaos) step(b *testing.B, progress float64) {
	if !c.milvusOff.IsZero() && time.Since(c.milvusOff) >= 20*time.Second {
		c.mv.Restart(b)
		c.milvusOff = time.Time{}
		fmt.Fprintf(os.Stderr, "soak: milvus-lite back after 20 s\n")
	}
	if !c.milvusOff.IsZero() {
		return
	}
	killNow := time.Since(c.lastKill) >= c.every
	if len(c.marks) > 0 && progress >= c.marks[0] {
		c.marks, killNow = c.marks[1:], true
	}
	if killNow {
		c.lastKill = time.Now()
		c.s.mu.Lock()
		i := c.r.IntN(len(c.s.workers))
		w := c.s.workers[i]
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
		c.s.workers[i] = c.s.startWorker(i)
		c.s.mu.Unlock()
		c.s.kills.Add(1)
		fmt.Fprintf(os.Stderr, "soak: SIGKILLed worker %d at %.0f%% of the jobs, restarted\n", i, 100*progress)
	}
	if !c.natsDone && progress >= 0.30 {
		c.natsDone = true
		which := c.ns.killLeader(b, c.topo.JobsStream())
		time.Sleep(2 * time.Second)
		c.ns.restart(b)
		c.s.natsKills.Add(1)
		fmt.Fprintf(os.Stderr, "soak: SIGKILLed %s at %.0f%%, restarted\n", which, 100*progress)
	}
	if !c.milvusWas && progress >= 0.60 {
		c.milvusWas = true
		c.mv.Stop()
		c.milvusOff = time.Now()
		c.s.milvusDown.Add(1)
		fmt.Fprintf(os.Stderr, "soak: stopped milvus-lite at %.0f%% for 20 s\n", 100*progress)
	}
}

// natsUnderTest is the soak's NATS: one nats-server process, or a
// JetStream cluster of nodes processes whose streams have 3 replicas.
type natsUnderTest struct {
	URL     string
	JS      jetstream.JetStream
	nodes   int
	single  *testenv.NATS
	cluster *testenv.NATSCluster
	killed  *testenv.NATS
}

func startNATS(b *testing.B, nodes int) *natsUnderTest {
	if nodes <= 1 {
		ns := testenv.StartNATSProcess(b)
		return &natsUnderTest{URL: ns.URL, JS: ns.JS, nodes: 1, single: ns}
	}
	c := testenv.StartNATSCluster(b, nodes)
	return &natsUnderTest{URL: c.URL, JS: c.JS, nodes: nodes, cluster: c}
}

// killLeader SIGKILLs the node that leads stream (the only server when
// there is one) and says which it was.
func (n *natsUnderTest) killLeader(b *testing.B, stream string) string {
	if n.single != nil {
		n.killed = n.single
		n.single.Kill(b)
		return "nats-server"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	i, err := n.cluster.StreamLeader(ctx, stream)
	if err != nil {
		b.Fatalf("leader of %s: %v", stream, err)
	}
	n.killed = n.cluster.Nodes[i]
	n.killed.Kill(b)
	return fmt.Sprintf("nats node %d (leader of %s)", i+1, stream)
}

func (n *natsUnderTest) restart(b *testing.B) { n.killed.Restart(b) }

// replicas of the streams and buckets: 3 on a cluster, 1 on one server.
func (n *natsUnderTest) replicas() int { return min(n.nodes, 3) }
