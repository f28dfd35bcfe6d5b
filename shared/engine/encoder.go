package engine

import (
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// Encoder runs a model over a batch of inputs. *embed.Model (images,
// float32 pixels) and *embed.TextModel (token ids) are encoders; a test can
// be one.
type Encoder[E Elem] interface {
	// Spec describes the model; Spec().Dim is the length of a vector.
	Spec() embed.Spec
	// InputSize is the number of values one input takes in a batch.
	InputSize() int
	// Embed runs n inputs (in holds n*InputSize() values) and writes n
	// L2-normalised vectors into out (n*Spec().Dim values). It must be safe
	// to call from BatchConfig.Concurrency goroutines at once.
	Embed(in []E, n int, out []float32) error
}

// ImageEncoder is an encoder of preprocessed images.
type ImageEncoder interface {
	Encoder[float32]
	// Params is the preprocessing the model's inputs need.
	Params() imageprep.Params
}

// TextEncoder is an encoder of tokenised text.
type TextEncoder interface {
	Encoder[int64]
	// Tokenize writes the ids of text, one input of InputSize values,
	// into ids.
	Tokenize(text string, ids []int64) error
}

var (
	_ ImageEncoder = (*embed.Model)(nil)
	_ TextEncoder  = (*embed.TextModel)(nil)
)
