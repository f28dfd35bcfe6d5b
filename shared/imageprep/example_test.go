package imageprep_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// Decode an image under the default limits and write CLIP's input tensor
// for it, as the worker does for every object.
func Example() {
	src := image.NewNRGBA(image.Rect(0, 0, 640, 480))
	for i := range src.Pix {
		src.Pix[i] = byte(i)
	}
	src.Set(0, 0, color.NRGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	_ = png.Encode(&buf, src)

	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	img, info, err := dec.Decode(buf.Bytes())
	if err != nil {
		fmt.Println(err)
		return
	}
	pp, err := imageprep.NewPreprocessor(imageprep.CLIP)
	if err != nil {
		fmt.Println(err)
		return
	}
	px := make([]float32, pp.Size())
	if err := pp.Run(img, px); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(info.Format, info.Width, info.Height, len(px))
	// Output: png 640 480 150528
}

// Peek reads what an image's header says, and what decoding it would cost,
// without decoding it: how the query server admits uploads.
func ExamplePeek() {
	var buf bytes.Buffer
	_ = png.Encode(&buf, image.NewGray(image.Rect(0, 0, 300, 200)))
	h, err := imageprep.Peek(buf.Bytes(), imageprep.Limits{})
	fmt.Println(h.Format, h.Width, h.Height, h.DecodeBytes, err)
	_, err = imageprep.Peek([]byte("<html>not found</html>"), imageprep.Limits{})
	fmt.Println(err)
	// Output:
	// png 300 200 840000 <nil>
	// unsupported image format: the object is HTML, not an image
}
