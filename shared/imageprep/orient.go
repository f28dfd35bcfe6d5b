package imageprep

// orient returns src turned upright for EXIF orientation o (2..8), written
// into dst's buffer. The mapping is Pillow's ImageOps.exif_transpose:
// 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
// 7 transverse, 8 rotate 90 counter-clockwise.
func orient(src Image, o int, dst Image) Image {
	w, h := src.Width, src.Height
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	dst = resizeImage(dst, ow, oh)
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			var sx, sy int
			switch o {
			case 2:
				sx, sy = w-1-x, y
			case 3:
				sx, sy = w-1-x, h-1-y
			case 4:
				sx, sy = x, h-1-y
			case 5:
				sx, sy = y, x
			case 6:
				sx, sy = y, h-1-x
			case 7:
				sx, sy = w-1-y, h-1-x
			case 8:
				sx, sy = w-1-y, x
			}
			s := (sy*w + sx) * 3
			d := (y*ow + x) * 3
			copy(dst.Pix[d:d+3], src.Pix[s:s+3])
		}
	}
	return dst
}
