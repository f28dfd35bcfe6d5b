// Command prepbench measures embedfleet's decode + preprocess throughput on
// one core over a folder of images, as `make bench-embed` runs it:
//
//	taskset -c 0 go run ./deploy/bench/prepbench --dir ../shared/bench/bsds500 --model clip-vit-b32
//
// It reads every file into memory first, so only decoding and preprocessing
// are timed, then prints `prepbench MODEL MODE img_s=X n=N`. With --compare
// it times exact decoding and --decode fast (a JPEG decoded at the DCT
// scaling fitted to the model's resize target) in alternate passes and
// prints `prep MODEL size=WxH exact_img_s=.. fast_img_s=.. speedup_x=..
// min_cosine=..`, the cosine being between the two input tensors of each
// file (the smallest over the folder), and then `prep_decode MODEL size=WxH
// exact_decode_img_s=.. fast_decode_img_s=.. decode_share_fast=..
// ceiling_x=..`: the same decoders timed without preprocessing, in the same
// alternate passes. decode_share_fast is the part of a fast image's time
// that is the JPEG decoder's, and ceiling_x the speedup fast would reach
// over exact if its preprocessing cost nothing (exact's whole time over
// fast's decoding alone).
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

func main() {
	dir := flag.String("dir", "", "folder of images (required)")
	model := flag.String("model", "clip-vit-b32", "clip-vit-b32 or dinov2-base")
	rounds := flag.Int("rounds", 3, "passes over the folder; the best pass is reported")
	compare := flag.Bool("compare", false, "time exact against fast decoding, and their tensors' cosine")
	flag.Parse()
	var err error
	if *compare {
		err = runCompare(*dir, *model, *rounds)
	} else {
		err = run(*dir, *model, *rounds)
	}
	if err != nil {
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

func load(dir string) ([]string, [][]byte, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(names)
	var files [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, b)
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("no files in %s", dir)
	}
	return names, files, nil
}

func runCompare(dir, model string, rounds int) error {
	params := map[string]imageprep.Params{"clip-vit-b32": imageprep.CLIP, "dinov2-base": imageprep.DINOv2}
	p, ok := params[model]
	if !ok {
		return fmt.Errorf("unknown model %q (want clip-vit-b32 or dinov2-base)", model)
	}
	names, files, err := load(dir)
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(1)
	decs := map[string]*imageprep.Decoder{
		"exact": imageprep.NewDecoder(imageprep.Limits{}),
		"fast":  imageprep.NewDecoder(imageprep.Limits{}, imageprep.WithJPEGDraft(p.ShortestEdge)),
	}
	pp, err := imageprep.NewPreprocessor(p)
	if err != nil {
		return err
	}
	best := map[string]float64{}
	outs := map[string][][]float32{"exact": make([][]float32, len(files)), "fast": make([][]float32, len(files))}
	size := ""
	for r := 0; r < rounds; r++ {
		for _, mode := range []string{"exact", "fast", "exact-decode", "fast-decode"} {
			dec, decodeOnly := strings.CutSuffix(mode, "-decode")
			start := time.Now()
			for i, b := range files {
				img, info, err := decs[dec].Decode(b)
				if err != nil {
					return fmt.Errorf("%s: %w", names[i], err)
				}
				if decodeOnly {
					continue
				}
				if outs[mode][i] == nil {
					outs[mode][i] = make([]float32, pp.Size())
				}
				if err := pp.Run(img, outs[mode][i]); err != nil {
					return fmt.Errorf("%s: %w", names[i], err)
				}
				if i == 0 {
					size = fmt.Sprintf("%dx%d", max(info.Width, info.Height), min(info.Width, info.Height))
				}
			}
			best[mode] = max(best[mode], float64(len(files))/time.Since(start).Seconds())
		}
	}
	minCos := 1.0
	for i := range files {
		a, b := outs["exact"][i], outs["fast"][i]
		var dot, na, nb float64
		for j := range a {
			dot += float64(a[j]) * float64(b[j])
			na += float64(a[j]) * float64(a[j])
			nb += float64(b[j]) * float64(b[j])
		}
		minCos = min(minCos, dot/math.Sqrt(na*nb))
	}
	fmt.Printf("prep %s size=%s exact_img_s=%.1f fast_img_s=%.1f speedup_x=%.2f min_cosine=%.5f n=%d\n",
		model, size, best["exact"], best["fast"], best["fast"]/best["exact"], minCos, len(files))
	fmt.Printf("prep_decode %s size=%s exact_decode_img_s=%.1f fast_decode_img_s=%.1f decode_share_fast=%.2f ceiling_x=%.2f n=%d\n",
		model, size, best["exact-decode"], best["fast-decode"], best["fast"]/best["fast-decode"], best["fast-decode"]/best["exact"], len(files))
	return nil
}
