package imageprep

import "encoding/binary"

// jpegMarkers is what the marker segments before a JPEG's image data say.
type jpegMarkers struct {
	orientation int // EXIF orientation 1..8, or 0 when absent or unreadable
}

// exifOrientation is the EXIF orientation stored in a JPEG (APP1), PNG
// (eXIf chunk) or WebP (EXIF chunk) file, or 0.
func exifOrientation(format string, data []byte) int {
	switch format {
	case "jpeg":
		return scanJPEG(data).orientation
	case "png":
		// Chunks after the signature: length, type, data, CRC.
		for i := 8; i+8 <= len(data); {
			n := int(binary.BigEndian.Uint32(data[i:]))
			if n < 0 || i+12+n > len(data) {
				return 0
			}
			switch string(data[i+4 : i+8]) {
			case "eXIf":
				return tiffOrientation(data[i+8 : i+8+n])
			case "IEND":
				return 0
			}
			i += 12 + n
		}
	case "webp":
		// RIFF chunks after "RIFF", size, "WEBP": fourcc, size, data (padded
		// to an even length).
		for i := 12; i+8 <= len(data); {
			n := int(binary.LittleEndian.Uint32(data[i+4:]))
			if n < 0 || i+8+n > len(data) {
				return 0
			}
			if string(data[i:i+4]) == "EXIF" {
				exif := data[i+8 : i+8+n]
				if len(exif) >= 6 && string(exif[:6]) == "Exif\x00\x00" {
					exif = exif[6:]
				}
				return tiffOrientation(exif)
			}
			i += 8 + n + n%2
		}
	}
	return 0
}

// scanJPEG reads the marker segments before the image data, checking every
// offset.
func scanJPEG(jpg []byte) jpegMarkers {
	var m jpegMarkers
	i := 2 // after SOI
	for i+4 <= len(jpg) {
		if jpg[i] != 0xFF {
			return m
		}
		marker := jpg[i+1]
		if marker == 0xFF { // fill byte
			i++
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return m
		}
		size := int(binary.BigEndian.Uint16(jpg[i+2:]))
		if size < 2 || i+2+size > len(jpg) {
			return m
		}
		seg := jpg[i+4 : i+2+size]
		if marker == 0xE1 && m.orientation == 0 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			m.orientation = tiffOrientation(seg[6:])
		}
		i += 2 + size
	}
	return m
}

// tiffOrientation reads tag 0x0112 of IFD0 from a TIFF-structured block.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0
	}
	ifd := int(bo.Uint32(t[4:]))
	if ifd < 8 || ifd+2 > len(t) {
		return 0
	}
	n := int(bo.Uint16(t[ifd:]))
	for e := 0; e < n; e++ {
		off := ifd + 2 + 12*e
		if off+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[off:]) == 0x0112 {
			if bo.Uint16(t[off+2:]) != 3 { // SHORT
				return 0
			}
			return int(bo.Uint16(t[off+8:]))
		}
	}
	return 0
}
