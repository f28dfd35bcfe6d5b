// Command prepbench measures embedfleet's decode + preprocess throughput on
// one core over a folder of images, as `make bench-embed` runs it:
//
//	taskset -c 0 go run ./deploy/bench/prepbench --dir ../shared/bench/bsds500 --model clip-vit-b32
//
// It reads every file into memory first, so only decoding and preprocessing
// are timed, then prints `prepbench MODEL MODE img_s=X n=N`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

func main() {
	dir := flag.String("dir", "", "folder of images (required)")
	model := flag.String("model", "clip-vit-b32", "clip-vit-b32 or dinov2-base")
	rounds := flag.Int("rounds", 3, "passes over the folder; the best pass is reported")
	flag.Parse()
	if err := run(*dir, *model, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "prepbench:", err)
		os.Exit(1)
	}
}

func run(dir, model string, rounds int) error {
	if dir == "" {
		return fmt.Errorf("--dir is required")
	}
	params := map[string]imageprep.Params{"clip-vit-b32": imageprep.CLIP, "dinov2-base": imageprep.DINOv2}
	p, ok := params[model]
	if !ok {
		return fmt.Errorf("unknown model %q (want clip-vit-b32 or dinov2-base)", model)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	var files [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return err
		}
		files = append(files, b)
	}
	if len(files) == 0 {
		return fmt.Errorf("no files in %s", dir)
	}
	runtime.GOMAXPROCS(1)
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	pp, err := imageprep.NewPreprocessor(p)
	if err != nil {
		return err
	}
	out := make([]float32, pp.Size())
	best := 0.0
	for r := 0; r < rounds; r++ {
		start := time.Now()
		for i, b := range files {
			img, _, err := dec.Decode(b)
			if err != nil {
				return fmt.Errorf("%s: %w", names[i], err)
			}
			if err := pp.Run(img, out); err != nil {
				return fmt.Errorf("%s: %w", names[i], err)
			}
		}
		best = max(best, float64(len(files))/time.Since(start).Seconds())
	}
	fmt.Printf("prepbench %s exact img_s=%.1f n=%d\n", model, best, len(files))
	return nil
}
