package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// BenchmarkTextQueries: 32 callers at once each embed a text through the
// engine with the full-size random-init CLIP text tower of `make
// random-models` (BENCH_MODELS_DIR, default ~/.cache/embedfleet/models-random-4),
// with batches of 1 (every text its own call) and of 8 and 32 (what serve's
// batcher makes of concurrent text queries). Reports texts/s.
//
//	go test -run '^$' -bench TextQueries -benchtime 10x ./shared/engine
func BenchmarkTextQueries(b *testing.B) {
	dir := testenv.RandomModelsDir()
	dir = filepath.Join(dir, "clip-vit-b32-text")
	if _, err := os.Stat(filepath.Join(dir, "spec.json")); err != nil {
		b.Skipf("%v (run `make random-models`)", err)
	}
	if _, err := embed.Init(testenv.Binary(b, testenv.EnvORTLib)); err != nil {
		b.Fatal(err)
	}
	m, err := embed.OpenText(dir, embed.Options{TokenizerDir: testenv.CLIPVocab(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	const callers = 32
	texts := make([]string, callers)
	for i := range texts {
		texts[i] = fmt.Sprintf("a photo of %d dogs playing in the snow near a red house", i)
	}
	for _, batch := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e, err := engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: batch}}, nil, []engine.TextEncoder{m})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			b.ResetTimer()
			for b.Loop() {
				var wg sync.WaitGroup
				for _, t := range texts {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := e.EmbedText(context.Background(), m.Spec().Name, t); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N*callers)/b.Elapsed().Seconds(), "texts/s")
		})
	}
}
