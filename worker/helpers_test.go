package worker_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

var imageprepLimits = imageprep.Limits{}

// pngHeader is a PNG signature and an IHDR claiming w x h pixels.
func pngHeader(w, h uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	body := make([]byte, 17)
	copy(body, "IHDR")
	binary.BigEndian.PutUint32(body[4:], w)
	binary.BigEndian.PutUint32(body[8:], h)
	body[12], body[13] = 8, 2
	binary.Write(&buf, binary.BigEndian, uint32(13))
	buf.Write(body)
	binary.Write(&buf, binary.BigEndian, crc32.ChecksumIEEE(body))
	return buf.Bytes()
}
