package imageprep

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
)

// decodeGIF returns the first frame of a GIF as Pillow shows it: on a canvas
// of the logical screen's size, the frame at its offset, the rest filled with
// the frame's transparent index when it has one and with index 0 otherwise,
// and every index in its palette colour, the transparent one included
// (Pillow's convert("RGB") ignores transparency). Go's decoder returns just
// the frame's rectangle, which may be smaller than the screen or empty, and
// turns the transparent colour into black.
func decodeGIF(data []byte, screenW, screenH int) (*image.Paletted, error) {
	m, err := gif.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	frame := m.(*image.Paletted)
	fill := uint8(0)
	if table, ti, ok := gifFirstFrameTable(data); ok && ti >= 0 {
		// Go's decoder has made the palette long enough for ti (black past
		// the table, as in Pillow) and turned ti's own colour transparent.
		fill = uint8(ti)
		if ti < len(table)/3 {
			frame.Palette[ti] = color.RGBA{R: table[3*ti], G: table[3*ti+1], B: table[3*ti+2], A: 0xFF}
		}
	}
	if frame.Rect == image.Rect(0, 0, screenW, screenH) {
		return frame, nil
	}
	canvas := image.NewPaletted(image.Rect(0, 0, screenW, screenH), frame.Palette)
	if fill != 0 {
		for i := range canvas.Pix {
			canvas.Pix[i] = fill
		}
	}
	r := frame.Rect.Intersect(canvas.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		copy(canvas.Pix[canvas.PixOffset(r.Min.X, y):canvas.PixOffset(r.Max.X, y)], frame.Pix[frame.PixOffset(r.Min.X, y):])
	}
	return canvas, nil
}

// gifFirstFrameTable walks a GIF's blocks up to its first image and returns
// that image's colour table as stored (the local one, else the global one)
// and its transparent index (-1 when it has none). ok is false when the
// blocks end early.
func gifFirstFrameTable(data []byte) (table []byte, transparent int, ok bool) {
	const header = 13
	if len(data) < header {
		return nil, -1, false
	}
	tableLen := func(packed byte) int { return 3 << ((packed & 7) + 1) }
	p := header
	var global []byte
	if flags := data[10]; flags&0x80 != 0 {
		n := tableLen(flags)
		if len(data) < p+n {
			return nil, -1, false
		}
		global, p = data[p:p+n], p+n
	}
	transparent = -1
	for p < len(data) {
		switch data[p] {
		case 0x21: // extension: label, then sub-blocks
			if p+2 >= len(data) {
				return nil, -1, false
			}
			label := data[p+1]
			q := p + 2
			if label == 0xF9 && q+5 < len(data) && data[q] == 4 {
				// Graphic control: its last one before the image counts.
				if data[q+1]&1 != 0 {
					transparent = int(data[q+4])
				} else {
					transparent = -1
				}
			}
			for q < len(data) && data[q] != 0 {
				q += int(data[q]) + 1
			}
			p = q + 1
		case 0x2C: // image descriptor
			if p+10 > len(data) {
				return nil, -1, false
			}
			if packed := data[p+9]; packed&0x80 != 0 {
				n := tableLen(packed)
				if p+10+n > len(data) {
					return nil, -1, false
				}
				return data[p+10 : p+10+n], transparent, true
			}
			return global, transparent, global != nil
		default:
			return nil, -1, false
		}
	}
	return nil, -1, false
}
