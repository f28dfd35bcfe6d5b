package imageprep

/*
#cgo CFLAGS: -O2
#cgo LDFLAGS: -l:libturbojpeg.a
#include "jpeg.h"
*/
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// jpegHeader is what the frame header of a JPEG says.
type jpegHeader struct {
	width, height int
	cmyk          bool // CMYK or YCCK: four channels
	progressive   bool
}

// readJPEGHeader reads the frame header. Recoverable damage before the frame
// (stray bytes between markers) is not an error, as it is not for Pillow.
func readJPEGHeader(data []byte) (jpegHeader, error) {
	var r C.ef_jpeg_result
	C.ef_jpeg_header((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), &r)
	if r.code != C.EF_JPEG_OK {
		return jpegHeader{}, errors.New(C.GoString(&r.msg[0]))
	}
	return jpegHeader{width: int(r.width), height: int(r.height), cmyk: r.cmyk != 0, progressive: r.progressive != 0}, nil
}

// errScans and errDeadline are the decoder's own stops; decodeJPEG turns
// them into ErrTooLarge with the limit that was passed.
var (
	errScans    = errors.New("too many scans")
	errDeadline = errors.New("decode deadline passed")
)

// decodeJPEGInto decodes data into dst: w*h*3 bytes of RGB, or w*h*4 of
// CMYK as stored (before any inversion) when cmyk. It stops past maxScans
// scans or after timeout (zero: no bound).
//
// scale (1, 2, 4 or 8) decodes at 1/scale of the stored size, in the DCT
// domain (libjpeg-turbo's scaling): w and h are then the scaled size,
// ScaledSize's.
func decodeJPEGInto(data, dst []byte, w, h int, cmyk bool, scale, maxScans int, timeout time.Duration) error {
	var r C.ef_jpeg_result
	c := C.int(0)
	if cmyk {
		c = 1
	}
	C.ef_jpeg_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), (*C.uchar)(unsafe.Pointer(&dst[0])),
		C.int(w), C.int(h), c, C.int(scale), C.int(maxScans), C.longlong(timeout.Nanoseconds()), &r)
	switch r.code {
	case C.EF_JPEG_OK:
		return nil
	case C.EF_JPEG_SCANS:
		return errScans
	case C.EF_JPEG_DEADLINE:
		return errDeadline
	}
	return errors.New(C.GoString(&r.msg[0]))
}

// jpegScale is the largest of libjpeg-turbo's scalings 1/2, 1/4 and 1/8
// that keeps the shorter side of a w x h JPEG at least minShort pixels; 1
// when minShort is 0 or none does.
func jpegScale(w, h, minShort int) int {
	if minShort <= 0 {
		return 1
	}
	for _, s := range []int{8, 4, 2} {
		sw, sh := scaledSize(w, h, s)
		if min(sw, sh) >= minShort {
			return s
		}
	}
	return 1
}

// scaledSize is libjpeg's output size at 1/s: each side rounded up.
func scaledSize(w, h, s int) (int, int) { return (w + s - 1) / s, (h + s - 1) / s }

// countJPEGScans counts the start-of-scan markers in data, walking the
// marker segments and skipping entropy-coded data, without decoding
// anything: microseconds for a photo, and how a file with thousands of
// progressive scans (each costs the decoder a pass over the whole
// coefficient buffer) is refused before it costs minutes. It stops counting
// once past stop.
func countJPEGScans(data []byte, stop int) int {
	n, i := 0, 2 // after SOI
	for i+4 <= len(data) && n <= stop {
		if data[i] != 0xFF {
			// Stray bytes: find the next marker.
			j := bytes.IndexByte(data[i:], 0xFF)
			if j < 0 {
				return n
			}
			i += j
			continue
		}
		m := data[i+1]
		switch {
		case m == 0xFF: // fill byte
			i++
			continue
		case m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7):
			i += 2
			continue
		case m == 0xD9: // EOI
			return n
		}
		seg := int(data[i+2])<<8 | int(data[i+3])
		i += 2 + seg
		if m != 0xDA {
			continue
		}
		n++
		// Entropy-coded data runs to the next marker that is neither a
		// stuffed zero nor a restart marker.
		for i < len(data) {
			j := bytes.IndexByte(data[i:], 0xFF)
			if j < 0 {
				return n
			}
			i += j
			if i+1 < len(data) && (data[i+1] == 0x00 || (data[i+1] >= 0xD0 && data[i+1] <= 0xD7) || data[i+1] == 0xFF) {
				i += 2
				if data[i-1] == 0xFF {
					i-- // a fill byte: look at it again
				}
				continue
			}
			break
		}
	}
	return n
}

func jpegLimitError(err error, lim Limits) error {
	switch {
	case errors.Is(err, errScans):
		return fmt.Errorf("%w: jpeg has more than %d progressive scans (limit --max-jpeg-scans; a decode bomb?)", ErrTooLarge, lim.MaxScans)
	case errors.Is(err, errDeadline):
		return fmt.Errorf("%w: jpeg decode took over %s (limit --max-decode-time)", ErrTooLarge, lim.MaxDecodeTime)
	}
	return nil
}
