package imageprep_test

import (
	"bytes"
	"image/jpeg"
	"testing"

	"github.com/embedfleet/embedfleet/shared/imageprep"
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
