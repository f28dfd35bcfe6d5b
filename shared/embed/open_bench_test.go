package embed_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// BenchmarkOpen opens the full-size random-init exports of `make
// random-models` (BENCH_MODELS_DIR, default ~/.cache/embedfleet/models-random-4):
// read, hash, check and build the session. Skipped when they are absent.
//
//	go test -run '^$' -bench Open -benchtime 3x ./shared/embed
func BenchmarkOpen(b *testing.B) {
	dir := testenv.RandomModelsDir()
	if _, err := embed.Init(testenv.Binary(b, testenv.EnvORTLib)); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"clip-vit-b32", "dinov2-base"} {
		if _, err := os.Stat(filepath.Join(dir, name, "spec.json")); err != nil {
			b.Skipf("%s: %v (run `make random-models`)", name, err)
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				m, err := embed.Open(filepath.Join(dir, name), embed.Options{})
				if err != nil {
					b.Fatal(err)
				}
				m.Close()
			}
		})
	}
}
