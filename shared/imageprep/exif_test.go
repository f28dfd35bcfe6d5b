package imageprep

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/png"
	"testing"
)

// tiffWithOrientation is a minimal little-endian TIFF block whose IFD0 holds
// only the orientation tag.
func tiffWithOrientation(o uint16) []byte {
	var b bytes.Buffer
	b.WriteString("II*\x00")
	_ = binary.Write(&b, binary.LittleEndian, uint32(8))
	_ = binary.Write(&b, binary.LittleEndian, uint16(1))
	for _, v := range []any{uint16(0x0112), uint16(3), uint32(1), o, uint16(0), uint32(0)} {
		_ = binary.Write(&b, binary.LittleEndian, v)
	}
	return b.Bytes()
}

// pngWithEXIF encodes a w x h PNG and adds an eXIf chunk before IEND.
func pngWithEXIF(t *testing.T, w, h int, exif []byte) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	iend := len(b) - 12
	var chunk bytes.Buffer
	_ = binary.Write(&chunk, binary.BigEndian, uint32(len(exif)))
	body := append([]byte("eXIf"), exif...)
	chunk.Write(body)
	_ = binary.Write(&chunk, binary.BigEndian, crc32.ChecksumIEEE(body))
	return append(append(append([]byte{}, b[:iend]...), chunk.Bytes()...), b[iend:]...)
}

// webpContainer is a RIFF WebP container with the given chunks (no image
// data is needed to find the EXIF chunk).
func webpContainer(chunks ...[]byte) []byte {
	var body bytes.Buffer
	body.WriteString("WEBP")
	for i := 0; i+1 < len(chunks); i += 2 {
		body.Write(chunks[i])
		_ = binary.Write(&body, binary.LittleEndian, uint32(len(chunks[i+1])))
		body.Write(chunks[i+1])
		if len(chunks[i+1])%2 == 1 {
			body.WriteByte(0)
		}
	}
	var b bytes.Buffer
	b.WriteString("RIFF")
	_ = binary.Write(&b, binary.LittleEndian, uint32(body.Len()))
	b.Write(body.Bytes())
	return b.Bytes()
}

func TestEXIFOrientationOf(t *testing.T) {
	six := tiffWithOrientation(6)
	cases := []struct {
		name, format string
		data         []byte
		want         int
	}{
		{"png eXIf", "png", pngWithEXIF(t, 4, 3, six), 6},
		{"png with an empty eXIf", "png", pngWithEXIF(t, 4, 3, nil), 0},
		{"png without eXIf", "png", pngWithEXIF(t, 4, 3, six)[:33], 0},
		{"webp EXIF after an odd-sized chunk", "webp", webpContainer([]byte("VP8X"), make([]byte, 10), []byte("ICCP"), []byte{1, 2, 3}, []byte("EXIF"), six), 6},
		{"webp EXIF with an Exif header", "webp", webpContainer([]byte("EXIF"), append([]byte("Exif\x00\x00"), tiffWithOrientation(3)...)), 3},
		{"webp without EXIF", "webp", webpContainer([]byte("VP8L"), make([]byte, 6)), 0},
		{"webp chunk size past the end", "webp", webpContainer([]byte("EXIF"), six)[:20], 0},
	}
	for _, c := range cases {
		if got := exifOrientation(c.format, c.data); got != c.want {
			t.Errorf("%s: orientation %d, want %d", c.name, got, c.want)
		}
	}
}

// TestPNGOrientationApplied decodes a 4x3 PNG stored with orientation 6: it
// comes out 3x4, and as stored with WithoutEXIFOrientation.
func TestPNGOrientationApplied(t *testing.T) {
	data := pngWithEXIF(t, 4, 3, tiffWithOrientation(6))
	img, info, err := NewDecoder(Limits{}).Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if img.Width != 3 || img.Height != 4 || info.Orientation != 6 {
		t.Fatalf("upright %dx%d, orientation %d; want 3x4, 6", img.Width, img.Height, info.Orientation)
	}
	img, _, err = NewDecoder(Limits{}, WithoutEXIFOrientation()).Decode(data)
	if err != nil || img.Width != 4 {
		t.Fatalf("WithoutEXIFOrientation: %dx%d (%v), want 4 wide", img.Width, img.Height, err)
	}
}
