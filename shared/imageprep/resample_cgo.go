package imageprep

/*
#cgo CFLAGS: -O3
#include <stdlib.h>
#include "resample.h"
*/
import "C"

import "unsafe"

// cResampleH and cResampleV hand the checked slices to resample.c. The
// coefficient arrays are C.int (int32) copies made once per coefficient set.

func cResampleH(src []byte, srcW, rows int, c *coeffs, dst []byte, row4 []int32) {
	C.ef_resample_h((*C.uchar)(unsafe.Pointer(&src[0])), C.int(srcW), C.int(rows), C.int(len(c.start)),
		(*C.int)(unsafe.Pointer(&c.start32[0])), (*C.int)(unsafe.Pointer(&c.count32[0])),
		(*C.int)(unsafe.Pointer(&c.k[0])), C.int(c.ksize), (*C.uchar)(unsafe.Pointer(&dst[0])),
		unsafe.Pointer(&row4[0]))
}

func cResampleV(src []byte, width, r0 int, c *coeffs, dst []byte, dstStride int, acc []int32) {
	C.ef_resample_v((*C.uchar)(unsafe.Pointer(&src[0])), C.int(width), C.int(r0), C.int(len(c.start)),
		(*C.int)(unsafe.Pointer(&c.start32[0])), (*C.int)(unsafe.Pointer(&c.count32[0])),
		(*C.int)(unsafe.Pointer(&c.k[0])), C.int(c.ksize), (*C.uchar)(unsafe.Pointer(&dst[0])), C.int(dstStride),
		(*C.int)(unsafe.Pointer(&acc[0])))
}
