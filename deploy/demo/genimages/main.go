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
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/embedfleet/embedfleet/shared/testimages"
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
	for i := 0; i < n; i++ {
		m := testimages.Photo(r, 240, 640)
		if err := os.WriteFile(filepath.Join(out, "images", fmt.Sprintf("img%04d.jpg", i)), testimages.JPEG(m, 90), 0o644); err != nil {
			return err
		}
		if i == 7 {
			if err := os.WriteFile(filepath.Join(out, "query.jpg"), testimages.JPEG(testimages.Scale(m, 0.75), 70), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
