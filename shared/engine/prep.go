package engine

import (
	"fmt"
	"runtime"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// Preparer decodes images and preprocesses them for one or more models: a
// pool of decoders and preprocessors, so that at most Workers images are
// being decoded at once and each decoder's buffers are reused. Safe for
// concurrent use.
type Preparer struct {
	params []imageprep.Params
	tools  chan *prepTools
	// RetainPixels: a decoder keeps its buffers only after images of at
	// most this many pixels; after a larger one it frees them (0: always
	// keeps them). Set before the first Prepare.
	RetainPixels int
}

type prepTools struct {
	dec *imageprep.Decoder
	pps []*imageprep.Preprocessor // one per params
}

// NewPreparer returns a Preparer with workers decoders (0: GOMAXPROCS)
// enforcing lim, and a preprocessor per params for each.
func NewPreparer(workers int, lim imageprep.Limits, opts []imageprep.DecoderOption, params ...imageprep.Params) (*Preparer, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	p := &Preparer{params: params, tools: make(chan *prepTools, workers)}
	for range workers {
		t := &prepTools{dec: imageprep.NewDecoder(lim, opts...)}
		for _, pa := range params {
			pp, err := imageprep.NewPreprocessor(pa)
			if err != nil {
				return nil, err
			}
			t.pps = append(t.pps, pp)
		}
		p.tools <- t
	}
	return p, nil
}

// Draft is the decoder option of fast decoding for models of params: a
// JPEG decodes at the smallest DCT scaling that keeps its shorter side at
// least the largest of their resize targets (imageprep.WithJPEGDraft), so
// one decode serves every model.
func Draft(params ...imageprep.Params) imageprep.DecoderOption {
	short := 0
	for _, p := range params {
		short = max(short, p.ShortestEdge, p.CropHeight, p.CropWidth)
	}
	return imageprep.WithJPEGDraft(short)
}

// Size is the number of values Prepare writes for params i.
func (p *Preparer) Size(i int) int { return 3 * p.params[i].CropHeight * p.params[i].CropWidth }

// Prepare decodes data once and writes, for each i in which, the input of
// params[which[i]] into dst[i]. decoded, when not nil, is called as soon as
// data is no longer needed (before preprocessing), so that a caller can
// release what it holds for the encoded bytes. It returns the decoded
// image's size, upright.
func (p *Preparer) Prepare(data []byte, which []int, dst [][]float32, decoded func()) (width, height int, err error) {
	if len(which) != len(dst) {
		return 0, 0, fmt.Errorf("engine: %d destinations for %d models", len(dst), len(which))
	}
	t := <-p.tools
	defer func() { p.tools <- t }()
	img, info, err := t.dec.Decode(data)
	if p.RetainPixels > 0 && info.Width*info.Height > p.RetainPixels {
		defer t.dec.Close()
	}
	if decoded != nil {
		decoded()
	}
	if err != nil {
		return 0, 0, err
	}
	for i, k := range which {
		if err := t.pps[k].Run(img, dst[i]); err != nil {
			return 0, 0, err
		}
	}
	return img.Width, img.Height, nil
}

// Close frees the decoders' buffers once every Prepare has returned.
func (p *Preparer) Close() {
	for range cap(p.tools) {
		(<-p.tools).dec.Close()
	}
}
