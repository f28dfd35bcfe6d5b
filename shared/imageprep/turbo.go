package imageprep

// JPEG decoding through libjpeg-turbo's TurboJPEG API, statically linked from
// Debian's libturbojpeg0-dev (make deps installs it). Pillow decodes JPEG
// with the same library and the same defaults (accurate integer IDCT, fancy
// chroma upsampling), which is what makes pixel-exact parity possible.

/*
#cgo LDFLAGS: -l:libturbojpeg.a
#include <stdio.h>
#include <stdlib.h>
#include <turbojpeg.h>

// The library keeps the text of a warning (and of most errors) in a
// thread-local buffer, and a goroutine may move to another OS thread between
// two cgo calls. So each call below reads the message and the error code in
// the same C call that produced them.
enum { ef_msg_len = 256 };

static void ef_error(tjhandle h, char *msg, int *code) {
	snprintf(msg, ef_msg_len, "%s", tjGetErrorStr2(h));
	*code = h ? tjGetErrorCode(h) : TJERR_FATAL;
}

static tjhandle ef_init(char *msg) {
	tjhandle h = tjInitDecompress();
	if (h == NULL) snprintf(msg, ef_msg_len, "%s", tjGetErrorStr2(NULL));
	return h;
}

static int ef_header(tjhandle h, const unsigned char *src, unsigned long n,
		int *w, int *ht, int *sub, int *cs, char *msg, int *code) {
	int rc = tjDecompressHeader3(h, src, n, w, ht, sub, cs);
	if (rc != 0) ef_error(h, msg, code);
	return rc;
}

static int ef_decompress(tjhandle h, const unsigned char *src, unsigned long n,
		unsigned char *dst, int w, int pitch, int ht, int pf, char *msg, int *code) {
	int rc = tjDecompress2(h, src, n, dst, w, pitch, ht, pf, 0);
	if (rc != 0) ef_error(h, msg, code);
	return rc;
}
*/
import "C"

import (
	"errors"
	"strings"
	"unsafe"
)

// turbo is one TurboJPEG decompressor handle. Not safe for concurrent use.
type turbo struct{ h C.tjhandle }

// tjError is what the library said about a failed call.
type tjError struct {
	msg  [C.ef_msg_len]C.char
	code C.int
}

func (e *tjError) String() string { return C.GoString(&e.msg[0]) }

func newTurbo() (*turbo, error) {
	var e tjError
	h := C.ef_init(&e.msg[0])
	if h == nil {
		return nil, errors.New("turbojpeg: cannot create a decompressor: " + e.String())
	}
	return &turbo{h: h}, nil
}

// reset replaces the handle with a fresh one.
func (t *turbo) reset() error {
	t.close()
	n, err := newTurbo()
	if err != nil {
		return err
	}
	t.h = n.h
	return nil
}

func (t *turbo) close() {
	if t.h != nil {
		C.tjDestroy(t.h)
		t.h = nil
	}
}

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
	var e tjError
	if C.ef_header(t.h, (*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), &cw, &ch, &sub, &cs, &e.msg[0], &e.code) != 0 {
		// Stray bytes between the markers are a warning here too, and the
		// header is read in full.
		if msg := e.String(); e.code != C.TJERR_WARNING || !isRecoverable(msg) {
			return 0, 0, 0, errors.New(msg)
		}
	}
	return int(cw), int(ch), int(cs), nil
}

// decodeCMYK decodes a CMYK or YCCK JPEG into dst (w*h*4 bytes) as the
// four channels stored in the file, before any inversion.
func (t *turbo) decodeCMYK(data, dst []byte, w, h int) error {
	return t.decompress(data, dst, w, w*4, h, C.TJPF_CMYK)
}

// decodeRGB decodes into dst, which holds w*h*3 bytes.
func (t *turbo) decodeRGB(data, dst []byte, w, h int) error {
	return t.decompress(data, dst, w, w*3, h, C.TJPF_RGB)
}

// decompress decodes data into dst. A warning from the library (recoverable
// damage such as stray bytes between markers) is not an error, as it is not
// for Pillow, except for a file that ends early.
func (t *turbo) decompress(data, dst []byte, w, pitch, h int, pf C.int) error {
	var e tjError
	rc := C.ef_decompress(t.h, (*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)),
		(*C.uchar)(unsafe.Pointer(&dst[0])), C.int(w), C.int(pitch), C.int(h), pf, &e.msg[0], &e.code)
	if rc == 0 {
		return nil
	}
	msg := e.String()
	if e.code == C.TJERR_WARNING && isRecoverable(msg) {
		return nil
	}
	return errors.New(msg)
}

// libjpegWarnings are the beginnings of libjpeg's warning messages (its
// JWRN_* codes) after which the whole image is decoded, as Pillow decodes it.
// "Premature end of JPEG file" is missing on purpose: embedfleet refuses
// every file that ends early. Pillow refuses them too, except, depending on
// how its reads fall, some sequential files that lack only the end-of-image
// marker; no fixed rule reproduces that, so none is tried.
var libjpegWarnings = []string{
	"Corrupt JPEG data",
	"Unknown Adobe color transform code",
	"Inconsistent progression sequence",
	"Warning: unknown JFIF revision",
	"Invalid SOS parameters for sequential JPEG",
	"Application transferred too many scanlines",
}

// isRecoverable tells whether a failure that TurboJPEG calls a warning was
// only a warning. TurboJPEG 2.1 keeps saying "warning" when a fatal error
// follows a warning in the same file, but then the message is the fatal
// one's (libjpeg reports only the first warning, and every fatal error), and
// the image is only partly decoded.
func isRecoverable(msg string) bool {
	for _, w := range libjpegWarnings {
		if strings.HasPrefix(msg, w) {
			return true
		}
	}
	return false
}
