// Command fullsize makes the full-size photo set of the decode benchmarks
// from the BSDS500 photos (481x321): each photo upscaled (Catmull-Rom) to a
// camera's size, 4000x3000 (12 MP) or 2000x1500 (3 MP), portrait ones
// turned the other way, with a little seeded grain so that the JPEG keeps
// detail to decode at every scale, saved at quality 90. Nothing of it is
// committed: `make bench-decode` makes it under bin/.
//
//	go run ./deploy/bench/fullsize --src ../shared/bench/bsds500 --out bin/fullsize --n 100
package main

import (
	"flag"
	"fmt"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/image/draw"
)

func main() {
	src := flag.String("src", "", "folder of photos (required)")
	out := flag.String("out", "", "where to write 4000x3000/ and 2000x1500/ (required)")
	n := flag.Int("n", 100, "photos per size")
	flag.Parse()
	if err := run(*src, *out, *n); err != nil {
		fmt.Fprintln(os.Stderr, "fullsize:", err)
		os.Exit(1)
	}
}

func run(src, out string, n int) error {
	if src == "" || out == "" {
		return fmt.Errorf("--src and --out are required")
	}
	names, err := filepath.Glob(filepath.Join(src, "*.jpg"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	if len(names) > n {
		names = names[:n]
	}
	for _, size := range [][2]int{{4000, 3000}, {2000, 1500}} {
		dir := filepath.Join(out, fmt.Sprintf("%dx%d", size[0], size[1]))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for i, name := range names {
			dst := filepath.Join(dir, filepath.Base(name))
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			if err := upscale(name, dst, size[0], size[1], uint64(i)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		fmt.Printf("fullsize: %d photos of %dx%d in %s\n", len(names), size[0], size[1], dir)
	}
	return nil
}

func upscale(src, dst string, w, h int, seed uint64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	img, err := jpeg.Decode(f)
	f.Close()
	if err != nil {
		return err
	}
	if b := img.Bounds(); b.Dy() > b.Dx() {
		w, h = h, w
	}
	big := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(big, big.Bounds(), img, img.Bounds(), draw.Src, nil)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range big.Pix {
		if i%4 == 3 {
			continue
		}
		v := int(big.Pix[i]) + r.IntN(9) - 4
		big.Pix[i] = uint8(max(0, min(255, v)))
	}
	o, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := jpeg.Encode(o, big, &jpeg.Options{Quality: 90}); err != nil {
		o.Close()
		return err
	}
	return o.Close()
}
