package imageprep

import "errors"

// Errors that Decode wraps. Each is permanent for the object that caused it:
// retrying the same bytes gives the same error.
var (
	// ErrUnsupported: the bytes are not an image in a format this package
	// reads (text, HTML, a video, an unknown format).
	ErrUnsupported = errors.New("unsupported image format")
	// ErrTooLarge: the object's byte size or the pixel count its header
	// declares is over the Limits.
	ErrTooLarge = errors.New("image too large")
	// ErrCorrupt: the format is known but the data is damaged or truncated.
	ErrCorrupt = errors.New("corrupt image")
)
