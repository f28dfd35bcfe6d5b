package imageprep

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
	"io"
	"time"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
	"golang.org/x/image/webp"
)

// Default limits. DefaultMaxPixels is Pillow's MAX_IMAGE_PIXELS, the size
// above which Pillow warns of a possible decompression bomb.
// DefaultMaxScans is ten times what libjpeg's and mozjpeg's progressive
// scripts write (10 scans or fewer); each scan costs a pass over the whole
// image. DefaultMaxDecodeTime is a backstop that no image within the other
// limits comes near (a 89-megapixel JPEG decodes in about a second).
const (
	DefaultMaxBytes      = 64 << 20
	DefaultMaxPixels     = 89_478_485
	DefaultMaxScans      = 100
	DefaultMaxDecodeTime = 10 * time.Second
)

// Limits bound what Decode accepts. Zero fields take the defaults.
type Limits struct {
	MaxBytes      int64         // largest encoded object, in bytes
	MaxPixels     int64         // largest width*height that a header may declare
	MaxScans      int           // most scans a (progressive) JPEG may have
	MaxDecodeTime time.Duration // a JPEG decode that runs longer stops
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxPixels <= 0 {
		l.MaxPixels = DefaultMaxPixels
	}
	if l.MaxScans <= 0 {
		l.MaxScans = DefaultMaxScans
	}
	if l.MaxDecodeTime <= 0 {
		l.MaxDecodeTime = DefaultMaxDecodeTime
	}
	return l
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

// Image is an 8-bit RGB raster: Pix holds Height rows of Width*3 bytes.
type Image struct {
	Width, Height int
	Pix           []byte
}

// Info describes the decoded object.
type Info struct {
	Format      string // jpeg, png, gif, webp, bmp, tiff
	Width       int    // as stored, before orientation
	Height      int
	Orientation int // EXIF orientation applied (1 = none)
}

// Decoder decodes images into an 8-bit RGB Image, reusing its buffers: the
// Image a call returns is valid until the next call. Not safe for concurrent
// use; give each goroutine its own.
type Decoder struct {
	lim      Limits
	noOrient bool
	draft    int // WithJPEGDraft's shorter side; 0: exact
	img, tmp Image
}

// DecoderOption customises a Decoder.
type DecoderOption func(*Decoder)

// WithoutEXIFOrientation keeps pixels as stored. By default Decode applies
// the EXIF orientation of JPEG, PNG and WebP files, as photo viewers and
// Pillow's ImageOps.exif_transpose do; Pillow's Image.open (and so the
// article's code) does not.
func WithoutEXIFOrientation() DecoderOption { return func(d *Decoder) { d.noOrient = true } }

// WithJPEGDraft decodes a JPEG at the smallest of libjpeg-turbo's DCT
// scalings (1/2, 1/4, 1/8) that keeps its shorter side at least minShort
// pixels, as Pillow's Image.draft does: a 4000x3000 photo for a 224-pixel
// model decodes at 500x375, several times faster. The pixels differ from a
// full decode resized (the vectors stay close; docs/benchmarks.md says how
// close), so it is an option: the default decodes exactly as Pillow does.
// Other formats decode as without it.
func WithJPEGDraft(minShort int) DecoderOption {
	return func(d *Decoder) { d.draft = max(minShort, 0) }
}

// NewDecoder returns a Decoder that enforces lim.
func NewDecoder(lim Limits, opts ...DecoderOption) *Decoder {
	d := &Decoder{lim: lim.withDefaults()}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Close releases the Decoder's buffers; it may be used again afterwards.
func (d *Decoder) Close() { d.img, d.tmp = Image{}, Image{} }

// ReadLimited reads all of r, failing with ErrTooLarge as soon as it passes
// max bytes, so a huge object is never held in memory.
func ReadLimited(r io.Reader, max int64) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxBytes
	}
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	return data, nil
}

// Sniff names the format of data from its first bytes, or returns "".
func Sniff(data []byte) string {
	switch {
	case len(data) >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF:
		return "jpeg"
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return "gif"
	case len(data) >= 12 && string(data[0:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return "webp"
	case bytes.HasPrefix(data, []byte("BM")):
		return "bmp"
	case bytes.HasPrefix(data, []byte("II*\x00")), bytes.HasPrefix(data, []byte("MM\x00*")):
		return "tiff"
	}
	return ""
}

// Decode decodes data into RGB. Errors wrap ErrUnsupported, ErrTooLarge or
// ErrCorrupt.
func (d *Decoder) Decode(data []byte) (*Image, Info, error) {
	if int64(len(data)) > d.lim.MaxBytes {
		return nil, Info{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), d.lim.MaxBytes)
	}
	format := Sniff(data)
	info := Info{Format: format, Orientation: 1}
	var err error
	switch format {
	case "":
		return nil, info, unsupported(data)
	case "jpeg":
		err = d.decodeJPEG(data, &info)
	case "webp":
		if isAnimatedWebP(data) {
			err = d.decodeAnimatedWebP(data, &info)
			break
		}
		err = d.decodeStd(data, &info)
	default:
		err = d.decodeStd(data, &info)
	}
	if err != nil {
		return nil, info, err
	}
	if !d.noOrient {
		if o := exifOrientation(format, data); o > 1 && o <= 8 {
			d.tmp = orient(d.img, o, d.tmp)
			d.img, d.tmp = d.tmp, d.img
			info.Orientation = o
		}
	}
	return &d.img, info, nil
}

func unsupported(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty object", ErrUnsupported)
	}
	if name := otherFormat(data); name != "" {
		return fmt.Errorf("%w: the object is %s, a format embedfleet does not decode (convert it to JPEG, PNG or WebP)", ErrUnsupported, name)
	}
	head := data[:min(len(data), 512)]
	if bytes.ContainsAny(head, "\x00") || !isText(head) {
		return fmt.Errorf("%w: unknown signature % x", ErrUnsupported, data[:min(len(data), 8)])
	}
	if bytes.Contains(bytes.ToLower(head), []byte("<html")) || bytes.Contains(bytes.ToLower(head), []byte("<!doctype")) {
		return fmt.Errorf("%w: the object is HTML, not an image", ErrUnsupported)
	}
	return fmt.Errorf("%w: the object is text, not an image", ErrUnsupported)
}

// otherFormat names well-known image (and image-like) formats that Decode
// does not read, from their signatures, so that a failure says what the
// object is: HEIC and AVIF from phones above all.
func otherFormat(data []byte) string {
	if len(data) >= 12 && string(data[4:8]) == "ftyp" {
		// ISO base media file: the major brand, then compatible brands.
		n := min(len(data), int(binary.BigEndian.Uint32(data[0:4])), 64)
		for i := 8; i+4 <= n; i += 4 {
			if i == 12 {
				continue // minor version
			}
			switch string(data[i : i+4]) {
			case "avif", "avis":
				return "an AVIF image"
			case "heic", "heix", "heim", "heis", "hevc", "hevx":
				return "a HEIC image"
			case "mif1", "msf1":
				return "a HEIF image"
			case "jxl ":
				return "a JPEG XL image"
			}
		}
		return "an ISO media file (MP4, MOV or HEIF family)"
	}
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0x0A}), bytes.HasPrefix(data, []byte("\x00\x00\x00\x0cJXL \r\n\x87\n")):
		return "a JPEG XL image"
	case bytes.HasPrefix(data, []byte("\x00\x00\x00\x0cjP  \r\n\x87\n")), bytes.HasPrefix(data, []byte{0xFF, 0x4F, 0xFF, 0x51}):
		return "a JPEG 2000 image"
	case bytes.HasPrefix(data, []byte("8BPS")):
		return "a Photoshop document"
	case bytes.HasPrefix(data, []byte{0, 0, 1, 0}) && len(data) >= 6 && data[4] > 0:
		return "an ICO icon"
	case bytes.HasPrefix(data, []byte("%PDF-")):
		return "a PDF document"
	}
	head := bytes.ToLower(data[:min(len(data), 512)])
	if bytes.Contains(head, []byte("<svg")) {
		return "an SVG drawing"
	}
	return ""
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x09 || (c > 0x0D && c < 0x20) {
			return false
		}
	}
	return true
}

func (d *Decoder) checkPixels(w, h int) error {
	if w <= 0 || h <= 0 {
		return fmt.Errorf("%w: header declares %dx%d pixels", ErrCorrupt, w, h)
	}
	if int64(w)*int64(h) > d.lim.MaxPixels {
		return fmt.Errorf("%w: header declares %dx%d = %d pixels, limit %d", ErrTooLarge, w, h, int64(w)*int64(h), d.lim.MaxPixels)
	}
	return nil
}

func (d *Decoder) decodeJPEG(data []byte, info *Info) error {
	hdr, err := readJPEGHeader(data)
	if err != nil {
		return fmt.Errorf("%w: jpeg header: %s", ErrCorrupt, err)
	}
	w, h := hdr.width, hdr.height
	info.Width, info.Height = w, h
	if err := d.checkPixels(w, h); err != nil {
		return err
	}
	if n := countJPEGScans(data, d.lim.MaxScans); n > d.lim.MaxScans {
		return jpegLimitError(errScans, d.lim)
	}
	scale := jpegScale(w, h, d.draft)
	w, h = scaledSize(w, h, scale)
	d.img = resizeImage(d.img, w, h)
	if hdr.cmyk {
		return d.decodeJPEGCMYK(data, w, h, scale)
	}
	if err := decodeJPEGInto(data, d.img.Pix, w, h, false, scale, d.lim.MaxScans, d.lim.MaxDecodeTime); err != nil {
		return d.jpegError(err)
	}
	return nil
}

func (d *Decoder) jpegError(err error) error {
	if lerr := jpegLimitError(err, d.lim); lerr != nil {
		return lerr
	}
	return fmt.Errorf("%w: jpeg: %s", ErrCorrupt, err)
}

// decodeJPEGCMYK decodes a CMYK or YCCK JPEG as Pillow does: it reads every
// four-channel JPEG as inverted (rawmode "CMYK;I", the Adobe convention),
// with or without an Adobe segment, then applies its CMYK -> RGB formula.
func (d *Decoder) decodeJPEGCMYK(data []byte, w, h, scale int) error {
	n := w * h * 4
	if cap(d.tmp.Pix) < n {
		d.tmp.Pix = make([]byte, n)
	}
	cmyk := d.tmp.Pix[:n]
	if err := decodeJPEGInto(data, cmyk, w, h, true, scale, d.lim.MaxScans, d.lim.MaxDecodeTime); err != nil {
		return d.jpegError(err)
	}
	p := d.img.Pix
	for i, j := 0, 0; i < n; i, j = i+4, j+3 {
		p[j], p[j+1], p[j+2] = cmykToRGB(^cmyk[i], ^cmyk[i+1], ^cmyk[i+2], ^cmyk[i+3])
	}
	return nil
}

// decodeAnimatedWebP decodes an animated WebP's first frame on its canvas,
// as Pillow shows it (webpanim.go).
func (d *Decoder) decodeAnimatedWebP(data []byte, info *Info) error {
	w, h, _, _ := webpCanvas(data)
	info.Width, info.Height = w, h
	if err := d.checkPixels(w, h); err != nil {
		return err
	}
	still, x, y, err := firstWebPFrame(data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	var fi = Info{Format: "webp"}
	if err := d.decodeStd(still, &fi); err != nil {
		return fmt.Errorf("animated webp, first frame: %w", err)
	}
	frame := d.img
	d.img = place(frame, w, h, x, y, d.tmp)
	d.tmp = frame
	return nil
}

// stdCodecs are the formats Go's decoders read (JPEG goes through libjpeg);
// a GIF's decode is decodeGIF's, for its first frame on the screen.
var stdCodecs = map[string]struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}{
	"png":  {png.DecodeConfig, png.Decode},
	"gif":  {gif.DecodeConfig, nil},
	"webp": {webp.DecodeConfig, webp.Decode},
	"bmp":  {bmp.DecodeConfig, bmp.Decode},
	"tiff": {tiff.DecodeConfig, tiff.Decode},
}

func (d *Decoder) decodeStd(data []byte, info *Info) error {
	codec := stdCodecs[info.Format]
	cfg, err := codec.config(bytes.NewReader(data))
	if err != nil {
		return stdError(info.Format+" header", err)
	}
	info.Width, info.Height = cfg.Width, cfg.Height
	if err := d.checkPixels(cfg.Width, cfg.Height); err != nil {
		return err
	}
	var m image.Image
	if info.Format == "gif" {
		m, err = decodeGIF(data, cfg.Width, cfg.Height)
	} else {
		m, err = codec.decode(bytes.NewReader(data))
	}
	if err != nil {
		return stdError(info.Format, err)
	}
	// Lossy WebP (VP8), with or without an alpha plane: libwebp's colours.
	var ycc *image.YCbCr
	switch y := m.(type) {
	case *image.YCbCr:
		ycc = y
	case *image.NYCbCrA:
		ycc = &y.YCbCr
	}
	if info.Format == "webp" && ycc != nil && ycc.SubsampleRatio == image.YCbCrSubsampleRatio420 {
		d.img = webpRGB(ycc, d.img)
		return nil
	}
	d.img = toRGB(m, d.img)
	return nil
}

// stdError wraps an error of Go's decoders: ErrUnsupported for a valid file
// of a variant they do not read (a CMYK TIFF, a BMP with an unusual header),
// ErrCorrupt for the rest.
func stdError(what string, err error) error {
	var (
		tiffU tiff.UnsupportedError
		pngU  png.UnsupportedError
		jpegU jpeg.UnsupportedError
	)
	if errors.As(err, &tiffU) || errors.As(err, &pngU) || errors.As(err, &jpegU) || errors.Is(err, bmp.ErrUnsupported) {
		return fmt.Errorf("%w: %s variant: %v", ErrUnsupported, what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, what, err)
}

// ToRGB converts a decoded image.Image to an RGB Image the way Decode does
// (Pillow's convert("RGB")).
func ToRGB(m image.Image) *Image {
	img := toRGB(m, Image{})
	return &img
}

// resizeImage returns img with room for w x h pixels, reusing its buffer.
func resizeImage(img Image, w, h int) Image {
	n := w * h * 3
	if cap(img.Pix) < n {
		img.Pix = make([]byte, n)
	}
	img.Pix = img.Pix[:n]
	img.Width, img.Height = w, h
	return img
}

// toRGB converts m to 8-bit RGB as Pillow's convert("RGB") does: grey is
// replicated, alpha is dropped, 16-bit samples keep their high byte, CMYK
// uses Pillow's formula.
func toRGB(m image.Image, dst Image) Image {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	dst = resizeImage(dst, w, h)
	p := dst.Pix
	i := 0
	switch src := m.(type) {
	case *image.NRGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := src.Pix[src.PixOffset(b.Min.X, y):]
			for x := 0; x < w; x++ {
				p[i], p[i+1], p[i+2] = row[4*x], row[4*x+1], row[4*x+2]
				i += 3
			}
		}
	case *image.Gray:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := src.Pix[src.PixOffset(b.Min.X, y):]
			for x := 0; x < w; x++ {
				v := row[x]
				p[i], p[i+1], p[i+2] = v, v, v
				i += 3
			}
		}
	case *image.CMYK:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := src.Pix[src.PixOffset(b.Min.X, y):]
			for x := 0; x < w; x++ {
				p[i], p[i+1], p[i+2] = cmykToRGB(row[4*x], row[4*x+1], row[4*x+2], row[4*x+3])
				i += 3
			}
		}
	case *image.Paletted:
		var pal [256][3]byte
		for j, c := range src.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			pal[j] = [3]byte{n.R, n.G, n.B}
		}
		for y := b.Min.Y; y < b.Max.Y; y++ {
			row := src.Pix[src.PixOffset(b.Min.X, y):]
			for x := 0; x < w; x++ {
				c := pal[row[x]]
				p[i], p[i+1], p[i+2] = c[0], c[1], c[2]
				i += 3
			}
		}
	case *image.YCbCr:
		// YCbCr that is not lossy WebP's 4:2:0 (Decode converts that with
		// webpRGB): nearest chroma sample, Go's YCbCr -> RGB conversion.
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := src.YOffset(x, y), src.COffset(x, y)
				p[i], p[i+1], p[i+2] = color.YCbCrToRGB(src.Y[yi], src.Cb[ci], src.Cr[ci])
				i += 3
			}
		}
	default:
		// 16-bit and the rest: through the
		// non-premultiplied 16-bit model, keeping the high byte.
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				c := color.NRGBA64Model.Convert(m.At(x, y)).(color.NRGBA64)
				p[i], p[i+1], p[i+2] = byte(c.R>>8), byte(c.G>>8), byte(c.B>>8)
				i += 3
			}
		}
	}
	return dst
}

// cmykToRGB is Pillow's cmyk2rgb: each channel is (255-k) - c*(255-k)/255,
// with Pillow's rounding of the product.
func cmykToRGB(c, m, y, k byte) (byte, byte, byte) {
	nk := 255 - int(k)
	f := func(v byte) byte {
		t := int(v)*nk + 128
		return byte(nk - ((t>>8)+t)>>8)
	}
	return f(c), f(m), f(y)
}
