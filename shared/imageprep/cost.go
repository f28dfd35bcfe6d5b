package imageprep

import (
	"bytes"
	"fmt"
)

// Header is what an image's header says, read without decoding it.
type Header struct {
	Format        string
	Width, Height int
	// DecodeBytes bounds the memory Decode holds at its peak for this
	// image (its pixel buffers and the decoder's own), beyond the encoded
	// bytes: what a server admits uploads by.
	DecodeBytes int64

	progressive, cmyk bool // a JPEG's, for ThumbnailBytes
}

// NativeBytes is the part of DecodeBytes and ThumbnailBytes that libjpeg
// holds outside the Go heap: a progressive file's coefficients (2 bytes a
// sample, at most 4 full-size components). A server that sets the Go
// runtime's soft memory limit lowers it by this while such a decode runs.
func (h Header) NativeBytes() int64 {
	if h.Format == "jpeg" && h.progressive {
		return int64(h.Width) * int64(h.Height) * 8
	}
	return 0
}

// ThumbnailBytes bounds the memory Thumbnail holds at its peak for this
// image at size, beyond the encoded bytes: a JPEG decoded at the DCT
// scaling Thumbnail asks for (its pixels, orientation buffer and RGBA
// copy at that scale; a progressive file's coefficients at full size),
// another format's DecodeBytes and its RGBA copy; then the thumbnail.
func (h Header) ThumbnailBytes(size int) int64 {
	out := int64(size) * int64(size) * 4
	px := int64(h.Width) * int64(h.Height)
	if h.Format != "jpeg" {
		return h.DecodeBytes + px*4 + out
	}
	sw, sh := scaledSize(h.Width, h.Height, jpegScale(h.Width, h.Height, size))
	perPixel := int64(6 + 4)
	if h.cmyk {
		perPixel += 4
	}
	return int64(sw)*int64(sh)*perPixel + out + h.NativeBytes()
}

// Bytes per pixel that Decode holds at its peak, by format: the RGB result
// (3), the buffer EXIF orientation turns it into (3), and the decoder's own
// raster: Go's PNG and TIFF decoders up to 16-bit RGBA (8), WebP's RGBA or
// YCbCr with alpha (4, and the canvas of an animation: 3), BMP's RGBA (4), a
// GIF's palette indexes (1). JPEG adds the CMYK buffer (4) for four-channel
// files, and libjpeg's coefficient buffer for progressive ones (2 bytes per
// sample, at most 4 full-size components: 8).
var decodeBytesPerPixel = map[string]int64{"png": 14, "tiff": 14, "webp": 13, "bmp": 10, "gif": 7}

// Peek reads the header of data under lim: format, size and what decoding
// it would cost. Its errors are Decode's for the same bytes (unsupported,
// corrupt header, over the byte, pixel or scan limits).
func Peek(data []byte, lim Limits) (Header, error) {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxBytes {
		return Header{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), lim.MaxBytes)
	}
	h := Header{Format: Sniff(data)}
	d := Decoder{lim: lim}
	perPixel := decodeBytesPerPixel[h.Format]
	switch h.Format {
	case "":
		return h, unsupported(data)
	case "jpeg":
		jh, err := readJPEGHeader(data)
		if err != nil {
			return h, fmt.Errorf("%w: jpeg header: %s", ErrCorrupt, err)
		}
		h.Width, h.Height = jh.width, jh.height
		if countJPEGScans(data, lim.MaxScans) > lim.MaxScans {
			return h, jpegLimitError(errScans, lim)
		}
		perPixel = 6
		h.progressive, h.cmyk = jh.progressive, jh.cmyk
		if jh.cmyk {
			perPixel += 4
		}
		if jh.progressive {
			perPixel += 8
		}
	case "webp":
		if w, ht, _, _ := webpCanvas(data); isAnimatedWebP(data) {
			h.Width, h.Height = w, ht
			break
		}
		fallthrough
	default:
		cfg, err := stdCodecs[h.Format].config(bytes.NewReader(data))
		if err != nil {
			return h, stdError(h.Format+" header", err)
		}
		h.Width, h.Height = cfg.Width, cfg.Height
	}
	if err := d.checkPixels(h.Width, h.Height); err != nil {
		return h, err
	}
	h.DecodeBytes = int64(h.Width) * int64(h.Height) * perPixel
	return h, nil
}
