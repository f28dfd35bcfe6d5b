// Command genimages writes a small set of photo-like test images for
// `make demo`: N JPEGs of gradients and soft discs at assorted sizes, plus
// query.jpg, a resized and re-encoded copy of image 7, which the demo's query
// should find first.
//
//	go run ./deploy/demo/genimages --out DIR --n 200
package main

import (
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/image/draw"
)

func main() {
	out := flag.String("out", "", "folder to write into (required)")
	n := flag.Int("n", 200, "number of images")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if *out == "" || *n < 8 {
		fmt.Fprintln(os.Stderr, "genimages: --out is required and --n must be at least 8")
		os.Exit(2)
	}
	if err := run(*out, *n, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "genimages:", err)
		os.Exit(1)
	}
}

func run(out string, n int, seed uint64) error {
	if err := os.MkdirAll(filepath.Join(out, "images"), 0o755); err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, 7))
	var keep image.Image
	for i := 0; i < n; i++ {
		m := photo(r)
		if i == 7 {
			keep = m
		}
		if err := save(filepath.Join(out, "images", fmt.Sprintf("img%04d.jpg", i)), m, 90); err != nil {
			return err
		}
	}
	b := keep.Bounds()
	small := image.NewRGBA(image.Rect(0, 0, b.Dx()*3/4, b.Dy()*3/4))
	draw.CatmullRom.Scale(small, small.Bounds(), keep, b, draw.Src, nil)
	return save(filepath.Join(out, "query.jpg"), small, 70)
}

func save(path string, m image.Image, q int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := jpeg.Encode(f, m, &jpeg.Options{Quality: q}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// photo draws a gradient, soft discs and a little texture.
func photo(r *rand.Rand) image.Image {
	w, h := 320+r.IntN(320), 240+r.IntN(240)
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	var base, grad [3]float64
	for i := range base {
		base[i], grad[i] = r.Float64()*255, r.Float64()*2-1
	}
	type disc struct {
		x, y, rad float64
		col       [3]float64
	}
	discs := make([]disc, 3+r.IntN(5))
	for i := range discs {
		discs[i] = disc{r.Float64() * float64(w), r.Float64() * float64(h), 20 + r.Float64()*120,
			[3]float64{r.Float64() * 255, r.Float64() * 255, r.Float64() * 255}}
	}
	fx, fy := r.Float64()*0.2, r.Float64()*0.2
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var c [3]float64
			for i := range c {
				c[i] = base[i] + grad[i]*90*(float64(x)/float64(w)-float64(y)/float64(h))
			}
			for _, d := range discs {
				dx, dy := float64(x)-d.x, float64(y)-d.y
				a := math.Exp(-(dx*dx + dy*dy) / (2 * d.rad * d.rad))
				for i := range c {
					c[i] = c[i]*(1-a) + d.col[i]*a
				}
			}
			t := 12 * math.Sin(fx*float64(x)+fy*float64(y))
			m.Set(x, y, color.RGBA{clamp(c[0] + t), clamp(c[1] + t), clamp(c[2] + t), 255})
		}
	}
	return m
}

func clamp(v float64) uint8 { return uint8(max(0, min(255, v))) }
