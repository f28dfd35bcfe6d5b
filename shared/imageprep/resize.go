package imageprep

import "math"

// Pillow's resampling, reproduced so that the pixels match Pillow's to the
// last bit: coefficients are computed in float64 exactly as Pillow's
// precompute_coeffs does, turned into 22-bit fixed point, and applied in two
// separable passes (horizontal, then vertical) on 8-bit data, rounding and
// clipping to 8 bits after each pass.

// precisionBits is Pillow's PRECISION_BITS for 8-bit images (32 - 8 - 2).
const precisionBits = 22

// Interpolation is the resampling filter used to resize.
type Interpolation int

// The filters, named as in Pillow and the Hugging Face processors.
const (
	Bicubic  Interpolation = iota // Pillow BICUBIC (resample=3), a = -0.5
	Bilinear                      // Pillow BILINEAR (resample=2)
)

func (f Interpolation) String() string {
	switch f {
	case Bicubic:
		return "bicubic"
	case Bilinear:
		return "bilinear"
	}
	return "unknown"
}

func (f Interpolation) support() float64 {
	if f == Bilinear {
		return 1
	}
	return 2
}

func (f Interpolation) weight(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if f == Bilinear {
		if x < 1 {
			return 1 - x
		}
		return 0
	}
	const a = -0.5
	if x < 1 {
		return ((a+2)*x-(a+3))*x*x + 1
	}
	if x < 2 {
		return (((x-5)*x+8)*x - 4) * a
	}
	return 0
}

// coeffs are the fixed-point weights for the outputs [from, to) of a resize
// from in to out samples along one axis.
type coeffs struct {
	ksize int
	start []int   // first input sample of each output
	count []int   // number of input samples of each output
	k     []int32 // ksize weights per output

	start32, count32 []int32 // start and count for the C loops
}

func computeCoeffs(in, out int, f Interpolation, from, to int) *coeffs {
	scale := float64(in) / float64(out)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := f.support() * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	n := to - from
	c := &coeffs{ksize: ksize, start: make([]int, n), count: make([]int, n), k: make([]int32, n*ksize)}
	w := make([]float64, ksize)
	for i := 0; i < n; i++ {
		xx := from + i
		center := (float64(xx) + 0.5) * scale
		ss := 1.0 / filterscale
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > in {
			xmax = in
		}
		xmax -= xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			w[x] = f.weight((float64(x+xmin) - center + 0.5) * ss)
			ww += w[x]
		}
		kk := c.k[i*ksize : (i+1)*ksize]
		for x := 0; x < xmax; x++ {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				kk[x] = int32(-0.5 + v*(1<<precisionBits))
			} else {
				kk[x] = int32(0.5 + v*(1<<precisionBits))
			}
		}
		c.start[i], c.count[i] = xmin, xmax
	}
	c.start32, c.count32 = make([]int32, n), make([]int32, n)
	for i := range c.start {
		c.start32[i], c.count32[i] = int32(c.start[i]), int32(c.count[i])
	}
	return c
}

// resampleH runs the horizontal pass over source rows [r0, r1) of src (RGB,
// width srcW) and writes rows of len(c.start) pixels into dst. The loops are
// in C (resample.c) where the compiler vectorises them; the slices are cut
// here to exactly what the C code touches. row4 is scratch of at least
// 4*srcW values.
func resampleH(src []byte, srcW, r0, r1 int, c *coeffs, dst []byte, row4 []int32) {
	n := len(c.start)
	if n == 0 || r1 <= r0 {
		return
	}
	for i := range c.start {
		if c.start[i] < 0 || c.count[i] < 0 || c.start[i]+c.count[i] > srcW || c.count[i] > c.ksize {
			panic("imageprep: horizontal coefficients out of range")
		}
	}
	src = src[r0*srcW*3 : r1*srcW*3]
	dst = dst[:(r1-r0)*n*3]
	cResampleH(src, srcW, r1-r0, c, dst, row4[:4*srcW])
}

// resampleV runs the vertical pass: src holds rows starting at source row
// r0, each of width pixels; output row i of c goes to dst at dstOff +
// i*dstStride. acc is scratch of at least width*3 values.
func resampleV(src []byte, width, r0 int, c *coeffs, dst []byte, dstOff, dstStride int, acc []int32) {
	rows := len(src) / (width * 3)
	for i := range c.start {
		if c.start[i]-r0 < 0 || c.start[i]-r0+c.count[i] > rows || c.count[i] > c.ksize {
			panic("imageprep: vertical coefficients out of range")
		}
	}
	if len(c.start) == 0 {
		return
	}
	last := dstOff + (len(c.start)-1)*dstStride + width*3
	dst = dst[dstOff:last]
	cResampleV(src, width, r0, c, dst, dstStride, acc[:width*3])
}
