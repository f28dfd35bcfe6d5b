package imageprep_test

import (
	"bytes"
	"errors"
	"fmt"
	"image/jpeg"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

// BenchmarkDecode and BenchmarkPreprocess time the two steps separately on
// a 481x321 JPEG, the size of the BSDS500 photos that `make bench-embed`
// uses for the img/s figures.
func BenchmarkDecode(b *testing.B) {
	data := fixture(b, "photo_481x321.jpg")
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := dec.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "img/s")
}

func BenchmarkPreprocess(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    imageprep.Params
	}{{"clip", imageprep.CLIP}, {"dinov2", imageprep.DINOv2}} {
		b.Run(tc.name, func(b *testing.B) {
			dec := imageprep.NewDecoder(imageprep.Limits{})
			img, _, err := dec.Decode(fixture(b, "photo_481x321.jpg"))
			if err != nil {
				b.Fatal(err)
			}
			pp, _ := imageprep.NewPreprocessor(tc.p)
			out := make([]float32, pp.Size())
			b.ReportAllocs()
			for b.Loop() {
				if err := pp.Run(img, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "img/s")
		})
	}
}

func BenchmarkCrop(b *testing.B) {
	dec := imageprep.NewDecoder(imageprep.Limits{})
	img, _, err := dec.Decode(fixture(b, "photo_481x321.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	pp, _ := imageprep.NewPreprocessor(imageprep.CLIP)
	out := make([]byte, 224*224*3)
	for b.Loop() {
		if err := pp.Crop(img, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "img/s")
}

// BenchmarkDecodeStdlib is Go's image/jpeg on the same file, plus the
// conversion to RGB: the alternative that libjpeg-turbo replaced (it is also
// not bit-exact with Pillow: no fancy chroma upsampling).
func BenchmarkDecodeStdlib(b *testing.B) {
	data := fixture(b, "photo_481x321.jpg")
	for b.Loop() {
		m, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		_ = imageprep.ToRGB(m)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "img/s")
}

// BenchmarkScanBomb: what a progressive JPEG's scans cost to decode, by image
// size and scan count (the limits are lifted), and what refusing one by its
// marker count costs: the figures behind --max-jpeg-scans
// (docs/security.md). `make bench-hostile` prints them.
func BenchmarkScanBomb(b *testing.B) {
	r := rand.New(rand.NewPCG(6, 6))
	photo := testimages.Photo(r, 200, 201)
	for _, side := range []int{1000, 4000} {
		prog := testimages.ProgressiveJPEG(testimages.Scale(photo, float64(side)/200), 90)
		for _, scans := range []int{10, 100, 400} {
			data := testimages.ScanBomb(prog, scans)
			b.Run(fmt.Sprintf("decode/%dx%d/scans=%d", side, side, scans), func(b *testing.B) {
				dec := imageprep.NewDecoder(imageprep.Limits{MaxScans: 1 << 30, MaxDecodeTime: time.Hour, MaxBytes: 1 << 30})
				defer dec.Close()
				for b.Loop() {
					if _, _, err := dec.Decode(data); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/decode")
			})
		}
	}
	bomb := testimages.ScanBomb(testimages.ProgressiveJPEG(photo, 90), 20000)
	b.Run("refuse/scans=20000", func(b *testing.B) {
		dec := imageprep.NewDecoder(imageprep.Limits{})
		defer dec.Close()
		for b.Loop() {
			if _, _, err := dec.Decode(bomb); !errors.Is(err, imageprep.ErrTooLarge) {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/decode")
		b.ReportMetric(float64(len(bomb))/(1<<20), "MiB")
	})
}
