package testimages

/*
#cgo LDFLAGS: -l:libturbojpeg.a
#include <stdlib.h>
#include <turbojpeg.h>

static int ef_progressive(const unsigned char *rgb, int w, int h, int q, unsigned char **out, unsigned long *n) {
	tjhandle t = tjInitCompress();
	if (t == NULL) return -1;
	int rc = tjCompress2(t, rgb, w, w * 3, h, TJPF_RGB, out, n, TJSAMP_420, q, TJFLAG_PROGRESSIVE);
	tjDestroy(t);
	return rc;
}
*/
import "C"

import (
	"bytes"
	"image"
	"unsafe"
)

// ProgressiveJPEG encodes m as a progressive JPEG at quality q with
// libjpeg-turbo's standard scan script (4:2:0).
func ProgressiveJPEG(m image.Image, q int) []byte {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	rgb := make([]byte, w*h*3)
	i := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := m.At(x, y).RGBA()
			rgb[i], rgb[i+1], rgb[i+2] = byte(r>>8), byte(g>>8), byte(bl>>8)
			i += 3
		}
	}
	var out *C.uchar
	var n C.ulong
	if C.ef_progressive((*C.uchar)(unsafe.Pointer(&rgb[0])), C.int(w), C.int(h), C.int(q), &out, &n) != 0 {
		panic("testimages: progressive JPEG encoding failed")
	}
	defer C.tjFree(out)
	return C.GoBytes(unsafe.Pointer(out), C.int(n))
}

// ScanBomb returns jpg, a progressive JPEG, with its last scan repeated
// until it has scans scans: a valid file that libjpeg decodes (it warns of
// an inconsistent progression and goes on), at a cost that grows with every
// scan. The shape of the progressive-JPEG decode bombs in "Two Issues with
// the JPEG Standard".
func ScanBomb(jpg []byte, scans int) []byte {
	// The last SOS segment and its entropy data run from the last SOS
	// marker to the EOI marker.
	last := bytes.LastIndex(jpg, []byte{0xFF, 0xDA})
	end := bytes.LastIndex(jpg, []byte{0xFF, 0xD9})
	if last < 0 || end < last {
		panic("testimages: ScanBomb needs a progressive JPEG")
	}
	have := bytes.Count(jpg[:end], []byte{0xFF, 0xDA}) // no 0xFFDA inside entropy data: 0xFF is stuffed
	scan := jpg[last:end]
	var b bytes.Buffer
	b.Write(jpg[:end])
	for range scans - have {
		b.Write(scan)
	}
	b.Write(jpg[end:])
	return b.Bytes()
}
