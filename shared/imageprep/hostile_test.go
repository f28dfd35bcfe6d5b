package imageprep_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "images", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var pngWithHeader = testimages.PNGHeaderClaiming

// jpegWithSize rewrites the frame size in a real JPEG's SOF0 segment.
func jpegWithSize(t *testing.T, w, h uint16) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	i := bytes.Index(b, []byte{0xFF, 0xC0})
	if i < 0 {
		t.Fatal("no SOF0 in encoded JPEG")
	}
	binary.BigEndian.PutUint16(b[i+5:], h)
	binary.BigEndian.PutUint16(b[i+7:], w)
	return b
}

func encodePNG(t *testing.T, m image.Image) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHostileInputs feeds damaged, disguised and oversized objects to the
// decoder and the preprocessor: each gives its documented outcome, none
// panics, and the decoder keeps working afterwards.
func TestHostileInputs(t *testing.T) {
	good := fixture(t, "photo_481x321.jpg")
	gray := image.NewGray(image.Rect(0, 0, 40, 30))
	rgba64 := image.NewNRGBA64(image.Rect(0, 0, 40, 30))
	for i := range rgba64.Pix {
		rgba64.Pix[i] = byte(i * 7)
	}
	var animated bytes.Buffer
	pal := color.Palette{color.Black, color.White}
	_ = gif.EncodeAll(&animated, &gif.GIF{
		Image: []*image.Paletted{image.NewPaletted(image.Rect(0, 0, 20, 10), pal), image.NewPaletted(image.Rect(0, 0, 20, 10), pal)},
		Delay: []int{10, 10},
	})

	cases := []struct {
		name    string
		data    []byte
		lim     imageprep.Limits
		wantErr error  // nil: decodes
		wantMsg string // in the error
		wantW   int    // when it decodes
	}{
		{name: "zero bytes", data: nil, wantErr: imageprep.ErrUnsupported, wantMsg: "empty"},
		{name: "text named .jpg", data: []byte("hello, this is not an image\n"), wantErr: imageprep.ErrUnsupported, wantMsg: "text"},
		{name: "html under an image name", data: []byte("<!DOCTYPE html><html><body>404</body></html>"), wantErr: imageprep.ErrUnsupported, wantMsg: "HTML"},
		{name: "binary garbage", data: []byte{0x00, 0x01, 0x02, 0xFE, 0x10}, wantErr: imageprep.ErrUnsupported, wantMsg: "signature"},
		{name: "truncated jpeg", data: good[:len(good)/2], wantErr: imageprep.ErrCorrupt},
		{name: "jpeg cut inside the header", data: good[:40], wantErr: imageprep.ErrCorrupt},
		{name: "jpeg soi then garbage", data: append([]byte{0xFF, 0xD8, 0xFF}, bytes.Repeat([]byte{0x42}, 100)...), wantErr: imageprep.ErrCorrupt},
		{name: "png header claims 30000x30000", data: pngWithHeader(30000, 30000), wantErr: imageprep.ErrTooLarge, wantMsg: "30000x30000"},
		{name: "jpeg header claims 60000x60000", data: jpegWithSize(t, 60000, 60000), wantErr: imageprep.ErrTooLarge},
		{name: "png signature, no chunks", data: []byte("\x89PNG\r\n\x1a\n"), wantErr: imageprep.ErrCorrupt},
		{name: "png header only, no data", data: pngWithHeader(10, 10), wantErr: imageprep.ErrCorrupt},
		{name: "over the byte limit", data: good, lim: imageprep.Limits{MaxBytes: 1000}, wantErr: imageprep.ErrTooLarge, wantMsg: "bytes"},
		{name: "over a pixel limit", data: good, lim: imageprep.Limits{MaxPixels: 1000}, wantErr: imageprep.ErrTooLarge, wantMsg: "481x321"},
		{name: "huge strip under the limit", data: encodePNG(t, image.NewGray(image.Rect(0, 0, 20000, 1))), wantW: 20000},
		{name: "grayscale png", data: encodePNG(t, gray), wantW: 40},
		{name: "16-bit png", data: encodePNG(t, rgba64), wantW: 40},
		{name: "animated gif (first frame)", data: animated.Bytes(), wantW: 20},
		{name: "cmyk jpeg", data: fixture(t, "cmyk_160x120.jpg"), wantW: 160},
		{name: "exif-rotated jpeg", data: fixture(t, "exif6_400x300.jpg"), wantW: 300},
		{name: "cmyk tiff (a variant Go does not read)", data: cmykTIFF(4, 3), wantErr: imageprep.ErrUnsupported, wantMsg: "variant"},
	}
	pp, err := imageprep.NewPreprocessor(imageprep.CLIP)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, pp.Size())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dec := imageprep.NewDecoder(tc.lim)
			defer dec.Close()
			img, info, err := dec.Decode(tc.data)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want an error wrapping %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("error %q does not say %q", err, tc.wantMsg)
				}
			} else {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if img.Width != tc.wantW {
					t.Fatalf("decoded width %d, want %d (info %+v)", img.Width, tc.wantW, info)
				}
				if err := pp.Run(img, out); err != nil {
					t.Fatalf("preprocess: %v", err)
				}
			}
			// The same decoder still decodes a good image afterwards.
			img, _, err = dec.Decode(good)
			if tc.lim == (imageprep.Limits{}) && (err != nil || img.Width != 481) {
				t.Fatalf("decoder broken after %s: %v", tc.name, err)
			}
		})
	}
}

func TestEXIFOrientationApplied(t *testing.T) {
	data := fixture(t, "exif6_400x300.jpg")
	dec := imageprep.NewDecoder(imageprep.Limits{})
	img, info, err := dec.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if info.Orientation != 6 || info.Width != 400 || info.Height != 300 || img.Width != 300 || img.Height != 400 {
		t.Fatalf("orientation %d, stored %dx%d, upright %dx%d; want 6, 400x300, 300x400",
			info.Orientation, info.Width, info.Height, img.Width, img.Height)
	}
	raw := imageprep.NewDecoder(imageprep.Limits{}, imageprep.WithoutEXIFOrientation())
	img, info, err = raw.Decode(data)
	if err != nil || img.Width != 400 || info.Orientation != 1 {
		t.Fatalf("WithoutEXIFOrientation: %dx%d orientation %d (%v); want 400 wide, 1", img.Width, img.Height, info.Orientation, err)
	}
}

func TestReadLimited(t *testing.T) {
	if _, err := imageprep.ReadLimited(bytes.NewReader(make([]byte, 2000)), 1000); !errors.Is(err, imageprep.ErrTooLarge) {
		t.Fatalf("2000 bytes with a 1000-byte limit: %v, want ErrTooLarge", err)
	}
	b, err := imageprep.ReadLimited(bytes.NewReader(make([]byte, 1000)), 1000)
	if err != nil || len(b) != 1000 {
		t.Fatalf("1000 bytes with a 1000-byte limit: %d bytes, %v", len(b), err)
	}
}

func TestPreprocessorRejectsBadInput(t *testing.T) {
	if _, err := imageprep.NewPreprocessor(imageprep.Params{}); !errors.Is(err, imageprep.ErrInvalidParams) {
		t.Fatalf("zero Params: %v, want ErrInvalidParams", err)
	}
	pp, _ := imageprep.NewPreprocessor(imageprep.DINOv2)
	if err := pp.Run(&imageprep.Image{Width: 2, Height: 2, Pix: make([]byte, 12)}, make([]float32, 10)); err == nil {
		t.Fatal("Run into a short destination succeeded")
	}
	if err := pp.Run(&imageprep.Image{Width: 2, Height: 2, Pix: make([]byte, 5)}, make([]float32, pp.Size())); err == nil {
		t.Fatal("Run of a malformed image succeeded")
	}
	// A 1x1 image upscales; a 1x5000 strip resizes to 256x1280000 in
	// theory, and must still produce a crop without allocating the whole.
	for _, im := range []*imageprep.Image{
		{Width: 1, Height: 1, Pix: []byte{10, 20, 30}},
		{Width: 1, Height: 5000, Pix: make([]byte, 15000)},
	} {
		if err := pp.Run(im, make([]float32, pp.Size())); err != nil {
			t.Fatalf("%dx%d: %v", im.Width, im.Height, err)
		}
	}
}

// FuzzDecodePreprocess: no input makes decode or preprocess panic, and an
// image that decodes always preprocesses.
func FuzzDecodePreprocess(f *testing.F) {
	for _, name := range []string{"photo_481x321.jpg", "small_100x75.jpg", "rgba_157x211.png", "anim_90x70.gif",
		"lossless_96x64.webp", "photo_150x110.bmp", "photo_140x100.tiff", "cmyk_160x120.jpg", "exif6_400x300.jpg"} {
		f.Add(fixture(f, name))
	}
	dec := imageprep.NewDecoder(imageprep.Limits{MaxPixels: 4 << 20})
	pp, _ := imageprep.NewPreprocessor(imageprep.CLIP)
	out := make([]float32, pp.Size())
	f.Fuzz(func(t *testing.T, data []byte) {
		img, _, err := dec.Decode(data)
		if err != nil {
			if !errors.Is(err, imageprep.ErrCorrupt) && !errors.Is(err, imageprep.ErrUnsupported) && !errors.Is(err, imageprep.ErrTooLarge) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if err := pp.Run(img, out); err != nil {
			t.Fatalf("decoded %dx%d but preprocess failed: %v", img.Width, img.Height, err)
		}
	})
}

// TestToRGBYCbCr checks the YCbCr fast path (lossy WebP) against Go's own
// colour model, pixel by pixel, on a 4:2:0 image.
func TestToRGBYCbCr(t *testing.T) {
	var buf bytes.Buffer
	src := image.NewNRGBA(image.Rect(0, 0, 37, 21))
	for i := range src.Pix {
		src.Pix[i] = byte(i * 13)
	}
	if err := jpeg.Encode(&buf, src, nil); err != nil {
		t.Fatal(err)
	}
	m, err := jpeg.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*image.YCbCr); !ok {
		t.Fatalf("decoded %T, want *image.YCbCr", m)
	}
	img := imageprep.ToRGB(m)
	for y := 0; y < 21; y++ {
		for x := 0; x < 37; x++ {
			c := color.RGBAModel.Convert(m.At(x, y)).(color.RGBA)
			p := img.Pix[(y*37+x)*3:]
			if p[0] != c.R || p[1] != c.G || p[2] != c.B {
				t.Fatalf("pixel (%d,%d) = %v, Go's model says %v", x, y, p[:3], c)
			}
		}
	}
}

// TestTruncatedJPEGConcurrent decodes truncated JPEGs from many goroutines at
// once. The library reports truncation as a warning whose text lives in a
// thread-local buffer; reading it in a second cgo call, after the goroutine
// may have moved to another OS thread, once let a truncated file through as
// a good image under load. Every decode here must fail with ErrCorrupt.
func TestTruncatedJPEGConcurrent(t *testing.T) {
	good := fixture(t, "photo_481x321.jpg")
	truncated := good[:len(good)/3]
	const workers, rounds = 16, 60
	errs := make(chan error, workers)
	for range workers {
		go func() {
			d := imageprep.NewDecoder(imageprep.Limits{})
			defer d.Close()
			for i := range rounds {
				if _, _, err := d.Decode(good); err != nil {
					errs <- fmt.Errorf("round %d, good image: %v", i, err)
					return
				}
				if _, _, err := d.Decode(truncated); !errors.Is(err, imageprep.ErrCorrupt) {
					errs <- fmt.Errorf("round %d, truncated image: got %v, want ErrCorrupt", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestJPEGWarnings: damage after which libjpeg decodes the whole image (a
// warning) gives the image, as in Pillow; a fatal error that follows a
// warning in the same file, which TurboJPEG still reports as a warning, is
// ErrCorrupt, as Pillow refuses the file ("broken data stream").
func TestJPEGWarnings(t *testing.T) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, testimages.Photo(rand.New(rand.NewPCG(3, 3)), 48, 64), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	clean := buf.Bytes()
	sos := bytes.Index(clean, []byte{0xFF, 0xDA})
	if sos < 0 {
		t.Fatal("no SOS marker")
	}
	// Three stray bytes before the SOS marker: "Corrupt JPEG data: 3
	// extraneous bytes before marker 0xda".
	stray := append(append(append([]byte{}, clean[:sos]...), 0x01, 0x02, 0x03), clean[sos:]...)
	// The same, and the scan's first component names Huffman tables 3, which
	// the file does not define: fatal, after the warning.
	fatal := append([]byte{}, stray...)
	fatal[sos+3+2+3+1] = 0x33 // FF DA, 2-byte length, Ns, then Cs and Td/Ta
	if os.Getenv("EMBEDFLEET_DUMP_JPEG_WARNINGS") != "" {
		_ = os.WriteFile("/tmp/jw_stray.jpg", stray, 0o644)
		_ = os.WriteFile("/tmp/jw_fatal.jpg", fatal, 0o644)
	}
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	want, _, err := dec.Decode(clean)
	if err != nil {
		t.Fatal(err)
	}
	wantPix := append([]byte{}, want.Pix...)
	got, _, err := dec.Decode(stray)
	if err != nil {
		t.Fatalf("stray bytes before a marker: %v, want the image", err)
	}
	if !bytes.Equal(got.Pix, wantPix) {
		t.Error("stray bytes before a marker changed the pixels")
	}
	if _, _, err := dec.Decode(fatal); !errors.Is(err, imageprep.ErrCorrupt) {
		t.Fatalf("undefined Huffman table after a warning: %v, want ErrCorrupt", err)
	} else {
		t.Log(err)
	}
	// A recoverable warning first must not hide that the file ends early.
	if _, _, err := dec.Decode(stray[:len(stray)-30]); !errors.Is(err, imageprep.ErrCorrupt) || !strings.Contains(err.Error(), "Premature end") {
		t.Fatalf("stray bytes, then a premature end: %v, want ErrCorrupt naming the premature end", err)
	}
}

// TestScanBomb: a progressive JPEG with thousands of scans (each one costs
// the decoder a pass over the whole image) is refused from a count of its
// markers, before any decoding, with a reason that names the limit; one just
// within the limit decodes; a raised limit lets the deadline stop it.
func TestScanBomb(t *testing.T) {
	prog := testimages.ProgressiveJPEG(testimages.Photo(rand.New(rand.NewPCG(5, 5)), 300, 301), 90)
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	for _, scans := range []int{imageprep.DefaultMaxScans + 1, 20000} {
		_, info, err := dec.Decode(testimages.ScanBomb(prog, scans))
		if !errors.Is(err, imageprep.ErrTooLarge) || !strings.Contains(err.Error(), "scans") {
			t.Fatalf("%d scans: %v, want ErrTooLarge naming the scan limit", scans, err)
		}
		if info.Width != 300 {
			t.Errorf("%d scans: info %+v, want the header's size", scans, info)
		}
	}
	if _, _, err := dec.Decode(testimages.ScanBomb(prog, imageprep.DefaultMaxScans)); err != nil {
		t.Fatalf("%d scans (the limit): %v, want the image", imageprep.DefaultMaxScans, err)
	}
	if _, _, err := dec.Decode(prog); err != nil {
		t.Fatal(err)
	}
	// The deadline: the scan limit lifted, a bomb that takes far longer
	// than 20 ms to decode stops there.
	big := testimages.ProgressiveJPEG(testimages.Scale(testimages.Photo(rand.New(rand.NewPCG(6, 6)), 200, 201), 10), 90)
	slow := imageprep.NewDecoder(imageprep.Limits{MaxScans: 1 << 30, MaxDecodeTime: 20 * time.Millisecond})
	defer slow.Close()
	if _, _, err := slow.Decode(testimages.ScanBomb(big, 400)); !errors.Is(err, imageprep.ErrTooLarge) || !strings.Contains(err.Error(), "took over") {
		t.Fatalf("400 scans of 2000x2000 with a 20 ms deadline: %v, want ErrTooLarge naming the deadline", err)
	}
	if _, _, err := slow.Decode(fixture(t, "photo_481x321.jpg")); err != nil {
		t.Fatalf("the same decoder afterwards: %v", err)
	}
}

// TestJPEGEnd: a JPEG that ends early is ErrCorrupt, however little is
// missing, sequential or progressive, RGB or CMYK. (Pillow refuses these too,
// but for a few sequential files that lack only the end-of-image marker,
// depending on how its reads fall; see recoverable in jpeg.c.)
func TestJPEGEnd(t *testing.T) {
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	for _, name := range []string{"photo_481x321.jpg", "cmyk_160x120.jpg", "progressive_200x150.jpg"} {
		data := fixture(t, name)
		if _, _, err := dec.Decode(data); err != nil {
			t.Fatal(err)
		}
		for _, cut := range []int{1, 2, 3, 9, 40, len(data) / 2} {
			if _, _, err := dec.Decode(data[:len(data)-cut]); !errors.Is(err, imageprep.ErrCorrupt) {
				t.Errorf("%s without its last %d bytes: %v, want ErrCorrupt", name, cut, err)
			}
		}
	}
}

// TestGray16PNG: a 16-bit greyscale PNG keeps each sample's high byte, as
// 16-bit colour PNGs do (a deliberate difference from Pillow, which clips
// these to 255; docs/models.md).
func TestGray16PNG(t *testing.T) {
	src := image.NewGray16(image.Rect(0, 0, 5, 3))
	for i := 0; i < len(src.Pix); i += 2 {
		src.Pix[i], src.Pix[i+1] = byte(i*17), byte(255-i)
	}
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	img, _, err := dec.Decode(encodePNG(t, src))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5*3; i++ {
		want := src.Pix[2*i]
		if got := img.Pix[3*i : 3*i+3]; got[0] != want || got[1] != want || got[2] != want {
			t.Fatalf("pixel %d: %v, want %d in every channel", i, got, want)
		}
	}
}

// cmykTIFF writes an uncompressed w x h CMYK TIFF (photometric 5), a valid
// file that Go's TIFF decoder does not read.
func cmykTIFF(w, h int) []byte {
	type entry struct{ tag, typ, value uint16 }
	pix := bytes.Repeat([]byte{10, 20, 30, 40}, w*h)
	const ifdAt = 8
	entries := []entry{
		{256, 3, uint16(w)}, {257, 3, uint16(h)}, {258, 3, 8}, {259, 3, 1}, {262, 3, 5},
		{273, 4, 0}, // strip offset: after the IFD, set below
		{277, 3, 4}, {278, 3, uint16(h)}, {279, 4, uint16(len(pix))},
	}
	pixAt := ifdAt + 2 + 12*len(entries) + 4
	var b bytes.Buffer
	b.WriteString("II*\x00")
	_ = binary.Write(&b, binary.LittleEndian, uint32(ifdAt))
	_ = binary.Write(&b, binary.LittleEndian, uint16(len(entries)))
	for _, e := range entries {
		v := uint32(e.value)
		if e.tag == 273 {
			v = uint32(pixAt)
		}
		_ = binary.Write(&b, binary.LittleEndian, e.tag)
		_ = binary.Write(&b, binary.LittleEndian, e.typ)
		_ = binary.Write(&b, binary.LittleEndian, uint32(1))
		if e.typ == 3 {
			_ = binary.Write(&b, binary.LittleEndian, uint16(v))
			_ = binary.Write(&b, binary.LittleEndian, uint16(0))
		} else {
			_ = binary.Write(&b, binary.LittleEndian, v)
		}
	}
	_ = binary.Write(&b, binary.LittleEndian, uint32(0)) // no next IFD
	b.Write(pix)
	return b.Bytes()
}

// animatedWebP wraps the bitstream chunks of a still WebP file into an
// animation of a w x h canvas: its first frame at (x, y), then a second
// frame (the same bitstream at the origin) that must not show.
func animatedWebP(t *testing.T, still []byte, w, h, x, y int) []byte {
	t.Helper()
	var frameChunks []byte
	for i := 12; i+8 <= len(still); {
		n := int(binary.LittleEndian.Uint32(still[i+4:]))
		cc := string(still[i : i+4])
		end := i + 8 + n + n&1
		if cc == "ALPH" || cc == "VP8 " || cc == "VP8L" {
			frameChunks = append(frameChunks, still[i:min(end, len(still))]...)
		}
		i = end
	}
	cfgW, cfgH := webpSize(t, still)
	le24 := func(v int) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }
	chunk := func(cc string, p []byte) []byte {
		out := append([]byte(cc), binary.LittleEndian.AppendUint32(nil, uint32(len(p)))...)
		out = append(out, p...)
		if len(p)&1 == 1 {
			out = append(out, 0)
		}
		return out
	}
	frame := func(fx, fy int) []byte {
		p := append(append(append(append(le24(fx/2), le24(fy/2)...), le24(cfgW-1)...), le24(cfgH-1)...), 100, 0, 0, 0)
		return chunk("ANMF", append(p, frameChunks...))
	}
	vp8x := append([]byte{0x12, 0, 0, 0}, append(le24(w-1), le24(h-1)...)...) // alpha + animation
	body := append([]byte("WEBP"), chunk("VP8X", vp8x)...)
	body = append(body, chunk("ANIM", make([]byte, 6))...)
	body = append(body, frame(x, y)...)
	body = append(body, frame(0, 0)...)
	return append(append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(len(body)))...), body...)
}

func webpSize(t *testing.T, data []byte) (int, int) {
	t.Helper()
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Width, cfg.Height
}

// TestAnimatedWebP: an animation decodes to its first frame on the canvas,
// as Pillow shows it: the frame's pixels at its offset, black elsewhere.
func TestAnimatedWebP(t *testing.T) {
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	for _, name := range []string{"lossy_161x107.webp", "lossless_96x64.webp", "lossy_alpha_120x90.webp"} {
		still := fixture(t, name)
		img, _, err := dec.Decode(still)
		if err != nil {
			t.Fatal(err)
		}
		want := *img
		want.Pix = append([]byte{}, img.Pix...)
		const x, y = 10, 6
		cw, ch := want.Width+x+7, want.Height+y+3
		got, info, err := dec.Decode(animatedWebP(t, still, cw, ch, x, y))
		if err != nil {
			t.Fatalf("%s as an animation: %v", name, err)
		}
		if info.Format != "webp" || got.Width != cw || got.Height != ch {
			t.Fatalf("%s as an animation: %dx%d %+v, want the %dx%d canvas", name, got.Width, got.Height, info, cw, ch)
		}
		for r := 0; r < ch; r++ {
			for c := 0; c < cw; c++ {
				px := got.Pix[(r*cw+c)*3 : (r*cw+c)*3+3]
				var exp []byte
				if r >= y && r < y+want.Height && c >= x && c < x+want.Width {
					i := ((r-y)*want.Width + (c - x)) * 3
					exp = want.Pix[i : i+3]
				} else {
					exp = []byte{0, 0, 0}
				}
				if !bytes.Equal(px, exp) {
					t.Fatalf("%s as an animation: pixel (%d,%d) = %v, want %v", name, c, r, px, exp)
				}
			}
		}
	}
	// A canvas over the pixel limit is refused before any frame is decoded.
	if _, _, err := dec.Decode(animatedWebP(t, fixture(t, "lossless_96x64.webp"), 1<<24, 1<<24, 0, 0)); !errors.Is(err, imageprep.ErrTooLarge) {
		t.Fatalf("a 2^24 x 2^24 canvas: %v, want ErrTooLarge", err)
	}
	// An animation whose frame is cut off is corrupt.
	anim := animatedWebP(t, fixture(t, "lossy_161x107.webp"), 200, 200, 0, 0)
	if _, _, err := dec.Decode(anim[:len(anim)/3]); !errors.Is(err, imageprep.ErrCorrupt) {
		t.Fatalf("a truncated animation: %v, want ErrCorrupt", err)
	}
}

// TestOtherFormatsNamed: formats the decoder does not read are
// ErrUnsupported with a reason that names them.
func TestOtherFormatsNamed(t *testing.T) {
	ftyp := func(brands ...string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(8+4*len(brands)))
		b = append(b, "ftyp"...)
		for _, br := range brands {
			b = append(b, br...)
		}
		return append(b, make([]byte, 64)...)
	}
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	for _, c := range []struct {
		data []byte
		name string
	}{
		{ftyp("heic", "\x00\x00\x00\x00", "mif1", "heic"), "HEIC"},
		{ftyp("mif1", "\x00\x00\x00\x00", "mif1", "heic"), "HEIF"},
		{ftyp("avif", "\x00\x00\x00\x00", "avif", "mif1"), "AVIF"},
		{ftyp("isom", "\x00\x00\x02\x00", "isom", "mp41"), "MP4"},
		{[]byte("\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00"), "JPEG XL"},
		{[]byte("\xff\x0a\xfa\x7f"), "JPEG XL"},
		{[]byte("\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00"), "JPEG 2000"},
		{[]byte("8BPS\x00\x01"), "Photoshop"},
		{[]byte("%PDF-1.7\n"), "PDF"},
		{[]byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>`), "SVG"},
	} {
		_, _, err := dec.Decode(c.data)
		if !errors.Is(err, imageprep.ErrUnsupported) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("%s: %v, want ErrUnsupported naming %s", c.name, err, c.name)
		}
	}
}
