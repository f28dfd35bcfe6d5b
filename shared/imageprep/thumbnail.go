package imageprep

import (
	"bytes"
	"image"
	"image/jpeg"

	"golang.org/x/image/draw"
)

// Thumbnail decodes data as the pipeline does (within lim, upright unless
// opts say otherwise; a JPEG at the smallest DCT scaling that keeps its
// shorter side at least size), fits it into size x size keeping its aspect
// (never enlarging), and encodes it as JPEG. The search page's thumbnails
// and dedup's report use it; Header.ThumbnailBytes bounds its memory.
func Thumbnail(data []byte, size int, lim Limits, opts ...DecoderOption) ([]byte, error) {
	dec := NewDecoder(lim, append(append([]DecoderOption(nil), opts...), WithJPEGDraft(size))...)
	defer dec.Close()
	img, _, err := dec.Decode(data)
	if err != nil {
		return nil, err
	}
	tw, th := img.Width, img.Height
	if tw > size || th > size {
		if tw >= th {
			tw, th = size, max(1, img.Height*size/img.Width)
		} else {
			tw, th = max(1, img.Width*size/img.Height), size
		}
	}
	src := &image.RGBA{Pix: make([]byte, img.Width*img.Height*4), Stride: img.Width * 4, Rect: image.Rect(0, 0, img.Width, img.Height)}
	for i, j := 0, 0; i < len(img.Pix); i, j = i+3, j+4 {
		src.Pix[j], src.Pix[j+1], src.Pix[j+2], src.Pix[j+3] = img.Pix[i], img.Pix[i+1], img.Pix[i+2], 0xff
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 82}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
