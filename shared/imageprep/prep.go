package imageprep

import (
	"errors"
	"fmt"
)

// Params are the preprocessing parameters of one model, as in its Hugging
// Face preprocessor_config.json.
type Params struct {
	ShortestEdge  int // resize so that the shorter side has this many pixels
	CropHeight    int // centre crop
	CropWidth     int
	Interpolation Interpolation
	RescaleFactor float64 // multiplies 8-bit values, usually 1/255
	Mean          [3]float32
	Std           [3]float32
}

// The preprocessing of the built-in models.
var (
	// CLIP is CLIPImageProcessor for openai/clip-vit-base-patch32.
	CLIP = Params{
		ShortestEdge: 224, CropHeight: 224, CropWidth: 224, Interpolation: Bicubic,
		RescaleFactor: 1.0 / 255,
		Mean:          [3]float32{0.48145466, 0.4578275, 0.40821073},
		Std:           [3]float32{0.26862954, 0.26130258, 0.27577711},
	}
	// DINOv2 is BitImageProcessor for facebook/dinov2-base.
	DINOv2 = Params{
		ShortestEdge: 256, CropHeight: 224, CropWidth: 224, Interpolation: Bicubic,
		RescaleFactor: 1.0 / 255,
		Mean:          [3]float32{0.485, 0.456, 0.406},
		Std:           [3]float32{0.229, 0.224, 0.225},
	}
)

// ErrInvalidParams is wrapped by NewPreprocessor for unusable Params.
var ErrInvalidParams = errors.New("invalid preprocessing parameters")

// Validate reports the first unusable field.
func (p Params) Validate() error {
	switch {
	case p.ShortestEdge <= 0:
		return fmt.Errorf("%w: shortest edge %d", ErrInvalidParams, p.ShortestEdge)
	case p.CropHeight <= 0 || p.CropWidth <= 0:
		return fmt.Errorf("%w: crop %dx%d", ErrInvalidParams, p.CropWidth, p.CropHeight)
	case p.Interpolation != Bicubic && p.Interpolation != Bilinear:
		return fmt.Errorf("%w: interpolation %d", ErrInvalidParams, p.Interpolation)
	case p.RescaleFactor <= 0:
		return fmt.Errorf("%w: rescale factor %v", ErrInvalidParams, p.RescaleFactor)
	}
	for c, s := range p.Std {
		if s == 0 {
			return fmt.Errorf("%w: std[%d] is 0", ErrInvalidParams, c)
		}
	}
	return nil
}

// ResizedSize is the size the Hugging Face processors resize a w x h image
// to: the shorter side becomes edge, the longer int(edge * long / short).
func ResizedSize(w, h, edge int) (int, int) {
	if w <= h {
		return edge, int(float64(edge*h) / float64(w))
	}
	return int(float64(edge*w) / float64(h)), edge
}

// Preprocessor resizes, crops and normalises images for one model. Not safe
// for concurrent use; give each goroutine its own.
type Preprocessor struct {
	p     Params
	lut   [3][256]float32
	cache map[coeffKey]*coeffs
	tmp   []byte
	acc   []int32 // vertical pass accumulators
	row4  []int32 // horizontal pass: one source row widened to RGBX
	crop  []byte
}

type coeffKey struct{ in, out, from, to int }

// maxCachedCoeffs bounds the coefficient cache; a collection of images of
// many sizes clears it now and then rather than growing it.
const maxCachedCoeffs = 256

// NewPreprocessor returns a Preprocessor for p.
func NewPreprocessor(p Params) (*Preprocessor, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	pp := &Preprocessor{p: p, cache: map[coeffKey]*coeffs{}, crop: make([]byte, p.CropHeight*p.CropWidth*3)}
	// The Hugging Face processors rescale in float64, cast to float32, then
	// normalise in float32: (float32(v*scale) - mean) / std. A table per
	// channel gives the same bits for every byte value.
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			x := float32(float64(v) * p.RescaleFactor)
			pp.lut[c][v] = (x - p.Mean[c]) / p.Std[c]
		}
	}
	return pp, nil
}

// Params returns the parameters the Preprocessor was built with.
func (pp *Preprocessor) Params() Params { return pp.p }

// Size is the number of float32 values Run writes: 3 * crop height * width.
func (pp *Preprocessor) Size() int { return 3 * pp.p.CropHeight * pp.p.CropWidth }

// Run resizes, crops and normalises img and writes it channels-first into
// dst, which must hold Size() values (a slot of the caller's batch tensor).
func (pp *Preprocessor) Run(img *Image, dst []float32) error {
	if len(dst) != pp.Size() {
		return fmt.Errorf("imageprep: destination holds %d values, want %d", len(dst), pp.Size())
	}
	if err := pp.Crop(img, pp.crop); err != nil {
		return err
	}
	plane := pp.p.CropHeight * pp.p.CropWidth
	r, g, b := dst[:plane], dst[plane:2*plane], dst[2*plane:3*plane]
	lr, lg, lb := &pp.lut[0], &pp.lut[1], &pp.lut[2]
	px := pp.crop
	for i := 0; i < plane; i++ {
		r[i] = lr[px[3*i]]
		g[i] = lg[px[3*i+1]]
		b[i] = lb[px[3*i+2]]
	}
	return nil
}

// Crop writes the resized and centre-cropped image, 8-bit RGB row by row,
// into dst (crop height * width * 3 bytes): the pixels that the Hugging Face
// processor has after its resize and center_crop steps. Where the resized
// image is smaller than the crop, the border is 0, as the processor pads.
func (pp *Preprocessor) Crop(img *Image, dst []byte) error {
	ch, cw := pp.p.CropHeight, pp.p.CropWidth
	if len(dst) != ch*cw*3 {
		return fmt.Errorf("imageprep: crop buffer holds %d bytes, want %d", len(dst), ch*cw*3)
	}
	if img == nil || img.Width <= 0 || img.Height <= 0 || len(img.Pix) != img.Width*img.Height*3 {
		return errors.New("imageprep: empty or malformed image")
	}
	nw, nh := ResizedSize(img.Width, img.Height, pp.p.ShortestEdge)
	if nw <= 0 || nh <= 0 {
		return fmt.Errorf("%w: %dx%d resizes to %dx%d", ErrCorrupt, img.Width, img.Height, nw, nh)
	}
	top, left := floorDiv(nh-ch, 2), floorDiv(nw-cw, 2)
	// Output rows [y0, y1) and columns [x0, x1) have image data.
	y0, y1 := max(0, -top), min(ch, nh-top)
	x0, x1 := max(0, -left), min(cw, nw-left)
	if y0 > 0 || x0 > 0 || y1 < ch || x1 < cw {
		clear(dst)
	}
	if y0 >= y1 || x0 >= x1 {
		return nil
	}
	hc := pp.coeffs(img.Width, nw, left+x0, left+x1)
	vc := pp.coeffs(img.Height, nh, top+y0, top+y1)
	r0, r1 := vc.start[0], 0
	for i := range vc.start {
		r0 = min(r0, vc.start[i])
		r1 = max(r1, vc.start[i]+vc.count[i])
	}
	cols := x1 - x0
	need := (r1 - r0) * cols * 3
	if cap(pp.tmp) < need {
		pp.tmp = make([]byte, need)
	}
	tmp := pp.tmp[:need]
	if cap(pp.row4) < 4*img.Width {
		pp.row4 = make([]int32, 4*img.Width)
	}
	resampleH(img.Pix, img.Width, r0, r1, hc, tmp, pp.row4)
	if cap(pp.acc) < cols*3 {
		pp.acc = make([]int32, cols*3)
	}
	resampleV(tmp, cols, r0, vc, dst, (y0*cw+x0)*3, cw*3, pp.acc)
	return nil
}

func (pp *Preprocessor) coeffs(in, out, from, to int) *coeffs {
	key := coeffKey{in, out, from, to}
	if c, ok := pp.cache[key]; ok {
		return c
	}
	if len(pp.cache) >= maxCachedCoeffs {
		clear(pp.cache)
	}
	c := computeCoeffs(in, out, pp.p.Interpolation, from, to)
	pp.cache[key] = c
	return c
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
