package imageprep

import "image"

// Lossy WebP stores 4:2:0 YCbCr. Pillow decodes it with libwebp, which by
// default interpolates the chroma planes ("fancy upsampling") and converts
// with its own fixed-point coefficients; Go's decoder leaves the planes as
// they are. webpRGB does what libwebp does, so that lossy WebP files give
// Pillow's pixels.

// webpRGB converts a 4:2:0 image decoded from a lossy WebP file to RGB.
func webpRGB(m *image.YCbCr, dst Image) Image {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	dst = resizeImage(dst, w, h)
	lumaRow := func(y int) []byte { return m.Y[y*m.YStride : y*m.YStride+w] }
	chromaRow := func(plane []byte, j int) []byte { return plane[j*m.CStride : j*m.CStride+(w+1)/2] }
	outRow := func(y int) []byte { return dst.Pix[y*w*3 : (y+1)*w*3] }
	// Row 0 sees only chroma row 0. Then each chroma row j >= 1 gives luma
	// rows 2j-1 (nearer chroma row j-1) and 2j (nearer row j). With an even
	// height the last row sees only the last chroma row.
	cb0, cr0 := chromaRow(m.Cb, 0), chromaRow(m.Cr, 0)
	upsampleRow(lumaRow(0), cb0, cr0, cb0, cr0, outRow(0))
	ch := (h + 1) / 2
	for j := 1; j < ch; j++ {
		pb, pr := chromaRow(m.Cb, j-1), chromaRow(m.Cr, j-1)
		nb, nr := chromaRow(m.Cb, j), chromaRow(m.Cr, j)
		upsampleRow(lumaRow(2*j-1), pb, pr, nb, nr, outRow(2*j-1))
		if 2*j < h {
			upsampleRow(lumaRow(2*j), nb, nr, pb, pr, outRow(2*j))
		}
	}
	if h%2 == 0 && h > 1 {
		lb, lr := chromaRow(m.Cb, ch-1), chromaRow(m.Cr, ch-1)
		upsampleRow(lumaRow(h-1), lb, lr, lb, lr, outRow(h-1))
	}
	return dst
}

// upsampleRow converts one row of luma. Its chroma comes from two chroma
// rows: near (weight 3) and far (weight 1), and within each from the two
// nearest columns, again 3 to 1: 9:3:3:1 in all, rounded in two steps as
// libwebp rounds. At the left edge, and at the right edge of an even width,
// only one column is used.
func upsampleRow(y, nearU, nearV, farU, farV []byte, out []byte) {
	w := len(y)
	edge := func(near, far byte) int { return (3*int(near) + int(far) + 2) >> 2 }
	put := func(x, u, v int) { writeYUV(y[x], u, v, out[3*x:3*x+3]) }
	put(0, edge(nearU[0], farU[0]), edge(nearV[0], farV[0]))
	// Pixels 2c-1 and 2c lie between chroma columns c-1 and c.
	mix := func(near, far []byte, c int) (odd, even int) {
		a, b := int(near[c-1]), int(near[c]) // near row: columns c-1, c
		d, e := int(far[c-1]), int(far[c])   // far row
		sum := a + b + d + e + 8
		toA := (sum + 2*(b+d)) >> 3 // the diagonal away from a and e
		toB := (sum + 2*(a+e)) >> 3
		return (toA + a) >> 1, (toB + b) >> 1
	}
	for c := 1; 2*c < w; c++ {
		u1, u2 := mix(nearU, farU, c)
		v1, v2 := mix(nearV, farV, c)
		put(2*c-1, u1, v1)
		put(2*c, u2, v2)
	}
	if w%2 == 0 && w > 1 {
		c := w/2 - 1
		put(w-1, edge(nearU[c], farU[c]), edge(nearV[c], farV[c]))
	}
}

// writeYUV is libwebp's YUV -> RGB conversion: 14-bit fixed point, then
// clamped to 0..255.
func writeYUV(y byte, u, v int, rgb []byte) {
	hi := func(x, k int) int { return (x * k) >> 8 }
	yy := hi(int(y), 19077)
	rgb[0] = clip14(yy + hi(v, 26149) - 14234)
	rgb[1] = clip14(yy - hi(u, 6419) - hi(v, 13320) + 8708)
	rgb[2] = clip14(yy + hi(u, 33050) - 17685)
}

func clip14(x int) byte {
	switch {
	case x < 0:
		return 0
	case x >= 256<<6:
		return 255
	}
	return byte(x >> 6)
}
