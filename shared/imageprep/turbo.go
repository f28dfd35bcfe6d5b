package imageprep

// JPEG decoding through libjpeg-turbo's TurboJPEG API, statically linked from
// Debian's libturbojpeg0-dev (make deps installs it). Pillow decodes JPEG
// with the same library and the same defaults (accurate integer IDCT, fancy
// chroma upsampling), which is what makes pixel-exact parity possible.

/*
#cgo LDFLAGS: -l:libturbojpeg.a
#include <stdlib.h>
#include <turbojpeg.h>
*/
import "C"

import (
	"errors"
	"strings"
	"unsafe"
)

// turbo is one TurboJPEG decompressor handle. Not safe for concurrent use.
type turbo struct{ h C.tjhandle }

func newTurbo() (*turbo, error) {
	h := C.tjInitDecompress()
	if h == nil {
		return nil, errors.New("turbojpeg: cannot create a decompressor: " + C.GoString(C.tjGetErrorStr2(nil)))
	}
	return &turbo{h: h}, nil
}

// reset replaces the handle with a fresh one.
func (t *turbo) reset() error {
	t.close()
	h := C.tjInitDecompress()
	if h == nil {
		return errors.New("turbojpeg: cannot create a decompressor")
	}
	t.h = h
	return nil
}

func (t *turbo) close() {
	if t.h != nil {
		C.tjDestroy(t.h)
		t.h = nil
	}
}

func (t *turbo) errString() string { return C.GoString(C.tjGetErrorStr2(t.h)) }

// Colour spaces a JPEG header can declare (TJCS_*).
const (
	tjcsRGB   = C.TJCS_RGB
	tjcsYCbCr = C.TJCS_YCbCr
	tjcsGray  = C.TJCS_GRAY
	tjcsCMYK  = C.TJCS_CMYK
	tjcsYCCK  = C.TJCS_YCCK
)

// header reads the frame header: size and colour space.
func (t *turbo) header(data []byte) (w, h, colorspace int, err error) {
	var cw, ch, sub, cs C.int
	if C.tjDecompressHeader3(t.h, (*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), &cw, &ch, &sub, &cs) != 0 {
		return 0, 0, 0, errors.New(t.errString())
	}
	return int(cw), int(ch), int(cs), nil
}

// decodeCMYK decodes a CMYK or YCCK JPEG into dst (w*h*4 bytes) as the
// four channels stored in the file, before any inversion.
func (t *turbo) decodeCMYK(data, dst []byte, w, h int) error {
	rc := C.tjDecompress2(t.h, (*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)),
		(*C.uchar)(unsafe.Pointer(&dst[0])), C.int(w), C.int(w*4), C.int(h), C.TJPF_CMYK, 0)
	return t.result(rc)
}

// decodeRGB decodes into dst, which holds w*h*3 bytes. A warning from the
// library (recoverable damage such as stray bytes between markers) is not an
// error, as it is not for Pillow, except for a truncated file, which Pillow
// refuses ("image file is truncated").
func (t *turbo) decodeRGB(data, dst []byte, w, h int) error {
	rc := C.tjDecompress2(t.h, (*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)),
		(*C.uchar)(unsafe.Pointer(&dst[0])), C.int(w), C.int(w*3), C.int(h), C.TJPF_RGB, 0)
	return t.result(rc)
}

func (t *turbo) result(rc C.int) error {
	if rc == 0 {
		return nil
	}
	msg := t.errString()
	if C.tjGetErrorCode(t.h) == C.TJERR_WARNING && !strings.Contains(msg, "Premature end") {
		return nil
	}
	return errors.New(msg)
}
