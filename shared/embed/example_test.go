package embed_test

import (
	"fmt"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// Load ONNX Runtime once, open a model folder (spec.json + model.onnx,
// checked against its sha256) and embed a batch of preprocessed images
// into L2-normalised vectors.
func Example() {
	version, err := embed.Init(embed.LibraryPath(""))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("onnx runtime", version)
	m, err := embed.Open("models/dinov2-base", embed.Options{IntraOpThreads: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	const n = 2
	pixels := make([]float32, n*m.InputSize()) // filled by imageprep.Preprocessor.Run
	vecs := make([]float32, n*m.Spec().Dim)
	if err := m.Embed(pixels, n, vecs); err != nil {
		fmt.Println(err)
	}
}
