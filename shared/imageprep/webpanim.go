package imageprep

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Animated WebP: Go's decoder reads only still images. Pillow (through
// libwebp's WebPAnimDecoder) shows an animation's first frame on a canvas
// of the animation's size cleared to transparent black: the frame's pixels
// at its offset, unblended (the first frame has nothing to blend with), zero
// elsewhere; convert("RGB") then drops the alpha. decodeAnimatedWebP does
// the same: it lifts the first frame's bitstream (VP8 or VP8L, with its ALPH
// chunk if any) into a still WebP of its own, decodes that as any WebP, and
// places it on the canvas.

const webpAnimFlag = 0x02 // VP8X flags: animation

// webpChunks walks the chunks of a RIFF WEBP file (after the 12-byte
// header), calling fn with each chunk's FourCC and payload until fn returns
// false. It reports whether the walk ended cleanly.
func webpChunks(data []byte, fn func(fourCC string, payload []byte) bool) bool {
	for i := 12; i+8 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[i+4:]))
		if n < 0 || i+8+n > len(data) {
			return false
		}
		if !fn(string(data[i:i+4]), data[i+8:i+8+n]) {
			return true
		}
		i += 8 + n + n&1
	}
	return true
}

// webpCanvas returns the canvas size and flags of a VP8X file, ok false when
// the file has no VP8X chunk first.
func webpCanvas(data []byte) (w, h int, flags byte, ok bool) {
	if len(data) < 30 || string(data[12:16]) != "VP8X" {
		return 0, 0, 0, false
	}
	p := data[20:]
	return int(le24(p[4:])) + 1, int(le24(p[7:])) + 1, p[0], true
}

func le24(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 }

func isAnimatedWebP(data []byte) bool {
	_, _, flags, ok := webpCanvas(data)
	return ok && flags&webpAnimFlag != 0
}

var errNoFrame = errors.New("animated webp without a frame")

// firstWebPFrame returns the first frame of an animated WebP as a still
// WebP file, with the frame's offset on the canvas.
func firstWebPFrame(data []byte) (still []byte, x, y int, err error) {
	var frame []byte
	ok := webpChunks(data, func(cc string, p []byte) bool {
		if cc == "ANMF" {
			frame = p
			return false
		}
		return true
	})
	if !ok {
		return nil, 0, 0, errors.New("animated webp: a chunk runs past the end of the file")
	}
	if len(frame) < 16 {
		return nil, 0, 0, errNoFrame
	}
	x, y = 2*int(le24(frame[0:])), 2*int(le24(frame[3:]))
	fw, fh := int(le24(frame[6:]))+1, int(le24(frame[9:]))+1
	var alph, bits []byte
	var bitsCC string
	// The frame's own chunks follow its 16-byte header; a fake RIFF header
	// lets webpChunks walk them.
	sub := append(make([]byte, 12, 12+len(frame)-16), frame[16:]...)
	webpChunks(sub, func(cc string, p []byte) bool {
		switch cc {
		case "ALPH":
			alph = p
		case "VP8 ", "VP8L":
			bits, bitsCC = p, cc
			return false
		}
		return true
	})
	if bits == nil {
		return nil, 0, 0, errors.New("animated webp: the first frame has no VP8 or VP8L bitstream")
	}
	var b bytes.Buffer
	b.WriteString("RIFF\x00\x00\x00\x00WEBP")
	if alph != nil && bitsCC == "VP8 " {
		vp8x := make([]byte, 10)
		vp8x[0] = 0x10 // alpha
		putLE24(vp8x[4:], uint32(fw-1))
		putLE24(vp8x[7:], uint32(fh-1))
		writeChunk(&b, "VP8X", vp8x)
		writeChunk(&b, "ALPH", alph)
	}
	writeChunk(&b, bitsCC, bits)
	out := b.Bytes()
	binary.LittleEndian.PutUint32(out[4:], uint32(len(out)-8))
	return out, x, y, nil
}

func putLE24(b []byte, v uint32) { b[0], b[1], b[2] = byte(v), byte(v>>8), byte(v>>16) }

func writeChunk(b *bytes.Buffer, cc string, p []byte) {
	b.WriteString(cc)
	_ = binary.Write(b, binary.LittleEndian, uint32(len(p)))
	b.Write(p)
	if len(p)&1 == 1 {
		b.WriteByte(0)
	}
}

// place puts frame (an RGB image) on a w x h canvas of zeros at (x, y),
// clipping what falls outside.
func place(frame Image, w, h, x, y int, dst Image) Image {
	dst = resizeImage(dst, w, h)
	clear(dst.Pix)
	for r := 0; r < frame.Height && y+r < h; r++ {
		if x >= w {
			break
		}
		n := min(frame.Width, w-x)
		copy(dst.Pix[((y+r)*w+x)*3:((y+r)*w+x+n)*3], frame.Pix[r*frame.Width*3:(r*frame.Width+n)*3])
	}
	return dst
}
