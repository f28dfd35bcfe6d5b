// Package testimages draws photo-like images (gradients, soft discs, a
// little texture) for tests, the demo and benchmarks: distinct enough that a
// resized copy of one finds it first, cheap enough to make hundreds.
//
//	r := rand.New(rand.NewPCG(1, 2))
//	img := testimages.Photo(r, 96, 216)      // size drawn from [96, 216)
//	jpg := testimages.JPEG(img, 90)
//	copy := testimages.JPEG(testimages.Scale(img, 0.75), 70)
package testimages

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"math/rand/v2"

	"golang.org/x/image/draw"
)

// Photo draws one image whose sides are drawn from [minSide, maxSide).
func Photo(r *rand.Rand, minSide, maxSide int) *image.RGBA {
	w, h := minSide+r.IntN(maxSide-minSide), minSide+r.IntN(maxSide-minSide)
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
	scale := float64(max(w, h))
	for i := range discs {
		discs[i] = disc{r.Float64() * float64(w), r.Float64() * float64(h), (0.05 + r.Float64()*0.3) * scale,
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

// JPEG encodes m at quality q.
func JPEG(m image.Image, q int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: q}); err != nil {
		panic(err) // encoding an in-memory RGBA image cannot fail
	}
	return b.Bytes()
}

// Scale resizes m by f with a Catmull-Rom filter.
func Scale(m image.Image, f float64) *image.RGBA {
	b := m.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, max(1, int(float64(b.Dx())*f)), max(1, int(float64(b.Dy())*f))))
	draw.CatmullRom.Scale(out, out.Bounds(), m, b, draw.Src, nil)
	return out
}

// PNGHeaderClaiming returns a PNG signature and a valid IHDR chunk that
// declares w x h RGB pixels, and no image data: a decompression bomb's
// header.
func PNGHeaderClaiming(w, h uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	body := make([]byte, 17)
	copy(body, "IHDR")
	binary.BigEndian.PutUint32(body[4:], w)
	binary.BigEndian.PutUint32(body[8:], h)
	body[12], body[13] = 8, 2 // 8-bit RGB
	_ = binary.Write(&buf, binary.BigEndian, uint32(13))
	buf.Write(body)
	_ = binary.Write(&buf, binary.BigEndian, crc32.ChecksumIEEE(body))
	return buf.Bytes()
}
