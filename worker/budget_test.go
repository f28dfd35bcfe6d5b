package worker_test

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/worker"
)

// heldSource counts the bytes of the objects being read at once, and the
// reads of each key. Reads are slowed, so that without a byte budget they
// would pile up to FetchConcurrency objects.
type heldSource struct {
	objstore.Source
	mu         sync.Mutex
	held, peak int64
	reads      map[string]int
}

func (h *heldSource) Get(ctx context.Context, key string, max int64) ([]byte, error) {
	h.mu.Lock()
	h.reads[key]++
	h.mu.Unlock()
	data, err := h.Source.Get(ctx, key, max)
	h.mu.Lock()
	h.held += int64(len(data))
	h.peak = maxOf(h.peak, h.held)
	h.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	h.mu.Lock()
	h.held -= int64(len(data))
	h.mu.Unlock()
	return data, err
}

func maxOf(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// TestFetchBudget: with 16 fetches allowed at once but a 3 MiB budget of
// fetched bytes, a worker never holds more than 3 MiB of 1 MiB objects,
// and an object over the size limit by its listing is failed without being
// read.
func TestFetchBudget(t *testing.T) {
	st := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(9, 9))
	noise := image.NewRGBA(image.Rect(0, 0, 640, 640))
	for i := range noise.Pix {
		noise.Pix[i] = uint8(r.IntN(256))
	}
	for i := range 24 {
		noise.Set(i, 0, color.RGBA{uint8(i), 0, 0, 255}) // distinct bytes
		st.put(t, fmt.Sprintf("big/%02d.jpg", i), encode(t, noise, 100))
	}
	huge := encode(t, image.NewGray(image.Rect(0, 0, 3000, 3000)), 100)
	st.put(t, "big/zz-huge.jpg", append(huge, make([]byte, 3<<20)...)) // over the 2 MiB limit

	listing, err := objstore.Open("s3://"+st.minio.Bucket+"/big/", st.s3, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	src := &heldSource{Source: listing, reads: map[string]int{}}
	cons, err := st.topo.WorkerConsumer(ctx, st.nats.JS, bus.ConsumerOptions{AckWait: 30 * time.Second, MaxDeliver: 5})
	if err != nil {
		t.Fatal(err)
	}
	var embedders []engine.ImageEncoder
	for _, m := range st.models[:1] {
		embedders = append(embedders, m)
	}
	const budget = 3 << 20
	w, err := worker.New(ctx, worker.Config{
		JS: st.nats.JS, Topology: st.topo, Consumer: cons, Models: embedders, Store: st.store,
		OpenSource: func(string) (objstore.Source, error) { return src, nil },
		BatchSize:  8, PrepWorkers: 2, FetchConcurrency: 16, FetchBytes: budget, Limits: imageprep.Limits{MaxBytes: 2 << 20},
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() { stop(); <-done }()
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: st.nats.JS, Topology: st.topo, Source: listing, Models: []string{"clip-vit-b32"}, JobSize: 25})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := coordinator.New(st.nats.JS, st.topo).Wait(ctx, rec, nil)
	if err != nil || !sum.Complete || sum.Stored != 24 || len(sum.Failed) != 1 {
		t.Fatalf("run: %v %+v", err, sum)
	}
	if f := sum.Failed[0]; f.Key != "big/zz-huge.jpg" || !strings.Contains(f.Reason, "too large") || f.Kind != "too_large" {
		t.Fatalf("failure %+v, want big/zz-huge.jpg too large", f)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	t.Logf("peak bytes read at once: %d KiB (budget %d KiB)", src.peak>>10, budget>>10)
	if src.peak > budget {
		t.Fatalf("held %d bytes of fetched objects at once, over the %d budget", src.peak, budget)
	}
	if src.peak < 1<<20 {
		t.Fatalf("peak %d bytes: the objects were not read", src.peak)
	}
	if n := src.reads["big/zz-huge.jpg"]; n != 0 {
		t.Fatalf("the object over the size limit was read %d times, want never", n)
	}
}
