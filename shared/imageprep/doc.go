// Package imageprep turns encoded image bytes into the float32 tensors that
// image encoders take, reproducing what Hugging Face's image processors do
// with Pillow (the reference the article's numbers come from).
//
// Two steps, each with reusable buffers so that the hot path allocates
// nothing per image once warmed up:
//
//	dec := imageprep.NewDecoder(imageprep.Limits{})      // one per goroutine
//	img, info, err := dec.Decode(data)                   // 8-bit RGB, EXIF-oriented
//	pp, err := imageprep.NewPreprocessor(imageprep.CLIP) // one per goroutine and model
//	err = pp.Run(img, batch[i*pp.Size():(i+1)*pp.Size()]) // CHW float32 into the caller's batch
//
// Decoding reads JPEG (libjpeg-turbo through cgo, the decoder Pillow uses),
// PNG, GIF (first frame), WebP, BMP and TIFF. It checks the byte size before
// reading and the pixel count from the header before decoding, and returns
// errors that wrap ErrUnsupported, ErrTooLarge or ErrCorrupt, so callers can
// record a per-item failure and go on. Colour conversion follows Pillow's
// convert("RGB"): grey is replicated, alpha is dropped (not composited), CMYK
// uses Pillow's formula.
//
// Preprocessing resizes the shortest edge with Pillow's antialiased filter
// (two separable passes in 8-bit fixed point, rounded between the passes),
// crops the centre at ((h-c)/2, (w-c)/2), rescales and normalises in float32
// exactly as the Hugging Face processors do, and writes channels-first.
//
// A Decoder and a Preprocessor are not safe for concurrent use; give each
// goroutine its own. Params values are plain data and may be shared.
package imageprep
