// Package engine is embedfleet's one inference path: decode, preprocess,
// batch, embed. Every command that embeds (the worker, serve, query,
// similarity, embed, bench) goes through it, so a change to inference (a
// GPU, int8, a faster decoder, a text tower) is made once.
//
// Its pieces:
//
//   - [Encoder]: a model that embeds a batch of inputs (*embed.Model for
//     images, *embed.TextModel for text, a fake in tests);
//
//   - [Preparer]: pools of decoders and preprocessors that turn image bytes
//     into model inputs, decoding once for several models;
//
//   - [Batcher]: packs inputs from many goroutines into batches (max batch,
//     linger, a cap on encoder calls at once), in a call form and a
//     streaming form;
//
//   - [Engine]: the call form for named models: image bytes or a text in,
//     a vector out.
//
//     e, err := engine.New(engine.Options{}, []engine.ImageEncoder{clip}, []engine.TextEncoder{clipText})
//     defer e.Close()
//     v, err := e.EmbedImage(ctx, "clip-vit-b32", jpegBytes)
//     t, err := e.EmbedText(ctx, "clip-vit-b32-text", "a photo of a cat")
package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// ErrUnknownModel is returned for a model the Engine does not serve.
var ErrUnknownModel = errors.New("model not served")

// Options configure an Engine. The zero value works.
type Options struct {
	// Batch configures every model's Batcher (Observe excepted: see below).
	Batch BatchConfig
	// PrepWorkers is the number of images decoded at once; default
	// GOMAXPROCS.
	PrepWorkers int
	// Limits and DecoderOptions: how image bytes are decoded; queries
	// should decode as the worker indexed.
	Limits         imageprep.Limits
	DecoderOptions []imageprep.DecoderOption
	// FastDecode decodes JPEGs at a DCT scaling fitted to the models'
	// resize targets (see Draft) instead of exactly as Pillow does.
	FastDecode bool
	// RetainPixels bounds the images whose buffers a decoder keeps for the
	// next one (0: any). A query server sets it, so that what a large
	// upload's decode held is given back with its share of the memory
	// budget instead of staying with the decoder.
	RetainPixels int
	// Observe, when set, is called after every encoder call with the model
	// and what BatchConfig.Observe gets.
	Observe func(model string, n int, took time.Duration, err error)
}

// Engine embeds image bytes and texts with named models. Safe for
// concurrent use; concurrent calls for one model share batches.
type Engine struct {
	prep *Preparer
	// images and texts hold every model under Versioned(name, version),
	// and under its bare name the first one given of that name.
	images  map[string]*imageModel
	texts   map[string]*textModel
	allImgs []*imageModel
	allTxts []*textModel
	names   []string // image models, in the order given, each name once
	tnames  []string
	window  int // images in flight in EmbedImages
}

// Versioned is the name under which an Engine serves one version of a
// model: "clip-vit-b32#sha256:3f2a...". Several versions of a model can be
// served side by side (a query server during a model upgrade answers from
// whichever version's collection is active); the bare name is the first
// version given.
func Versioned(name, version string) string {
	if version == "" {
		return name
	}
	return name + "#" + version
}

// register adds a model of spec s under its versioned key and, if it is
// the first of its name, under the name; it returns whether it was the
// first.
func register[M any](m map[string]M, s embed.Spec, v M) (bool, error) {
	key := Versioned(s.Name, s.Version)
	if _, dup := m[key]; dup {
		if s.Version == "" {
			return false, fmt.Errorf("engine: model %s given twice", s.Name)
		}
		return false, fmt.Errorf("engine: model %s version %s given twice", s.Name, s.Version)
	}
	m[key] = v
	if _, ok := m[s.Name]; ok {
		return false, nil
	}
	m[s.Name] = v
	return true, nil
}

type imageModel struct {
	enc ImageEncoder
	idx int // its params' index in prep
	b   *Batcher[float32]
}

type textModel struct {
	enc TextEncoder
	b   *Batcher[int64]
}

// New starts an Engine over images and texts (either may be empty). Each
// text model that pairs with one of the image models must pair with its
// version.
func New(opts Options, images []ImageEncoder, texts []TextEncoder) (*Engine, error) {
	e := &Engine{images: map[string]*imageModel{}, texts: map[string]*textModel{}}
	var params []imageprep.Params
	for _, m := range images {
		im := &imageModel{enc: m, idx: len(params)}
		first, err := register(e.images, m.Spec(), im)
		if err != nil {
			return nil, err
		}
		params = append(params, m.Params())
		e.allImgs = append(e.allImgs, im)
		if first {
			e.names = append(e.names, m.Spec().Name)
		}
	}
	for _, m := range texts {
		s := m.Spec()
		if _, dup := e.images[s.Name]; dup {
			return nil, fmt.Errorf("engine: model %s given twice", s.Name)
		}
		// A text tower pairs with the version of its image model that is
		// served, if that model is served at all.
		if s.PairsWith != nil {
			if _, ok := e.images[pairName(s)]; ok {
				im, ok := e.images[Versioned(pairName(s), s.PairsWith.Version)]
				if !ok {
					im = e.images[pairName(s)]
				}
				if err := embed.CheckPair(s, im.enc.Spec()); err != nil {
					return nil, err
				}
			}
		}
		tm := &textModel{enc: m}
		first, err := register(e.texts, s, tm)
		if err != nil {
			return nil, err
		}
		e.allTxts = append(e.allTxts, tm)
		if first {
			e.tnames = append(e.tnames, s.Name)
		}
	}
	decOpts := opts.DecoderOptions
	if opts.FastDecode && len(params) > 0 {
		decOpts = append(append([]imageprep.DecoderOption(nil), decOpts...), Draft(params...))
	}
	prep, err := NewPreparer(opts.PrepWorkers, opts.Limits, decOpts, params...)
	if err != nil {
		return nil, err
	}
	prep.RetainPixels = opts.RetainPixels
	e.prep = prep
	cfg := func(name string) BatchConfig {
		c := opts.Batch
		if opts.Observe != nil {
			c.Observe = func(n int, took time.Duration, err error) { opts.Observe(name, n, took, err) }
		}
		return c
	}
	for _, m := range e.allImgs {
		m.b = NewBatcher[float32](m.enc, cfg(m.enc.Spec().Name))
	}
	for _, m := range e.allTxts {
		m.b = NewBatcher[int64](m.enc, cfg(m.enc.Spec().Name))
	}
	workers := opts.PrepWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	e.window = 2*opts.Batch.withDefaults().MaxBatch + workers
	return e, nil
}

func pairName(s embed.Spec) string {
	if s.PairsWith == nil {
		return ""
	}
	return s.PairsWith.Name
}

// Close stops the batchers once their queued work is done.
func (e *Engine) Close() {
	for _, m := range e.allImgs {
		m.b.Close()
	}
	for _, m := range e.allTxts {
		m.b.Close()
	}
	e.prep.Close()
}

// ImageModels returns the names of the image models, in the order given.
func (e *Engine) ImageModels() []string { return e.names }

// TextModels returns the names of the text models, in the order given.
func (e *Engine) TextModels() []string { return e.tnames }

// Spec returns the spec of a model, image or text.
func (e *Engine) Spec(model string) (embed.Spec, bool) {
	if m, ok := e.images[model]; ok {
		return m.enc.Spec(), true
	}
	if m, ok := e.texts[model]; ok {
		return m.enc.Spec(), true
	}
	return embed.Spec{}, false
}

// Versions returns the versions served of image or text model name, in the
// order given.
func (e *Engine) Versions(name string) []string {
	var out []string
	for _, m := range e.allImgs {
		if s := m.enc.Spec(); s.Name == name {
			out = append(out, s.Version)
		}
	}
	for _, m := range e.allTxts {
		if s := m.enc.Spec(); s.Name == name {
			out = append(out, s.Version)
		}
	}
	return out
}

// TextForVersion returns the text model that pairs with version version
// of image model image (or the text model image names, if it pairs with
// that version).
func (e *Engine) TextForVersion(image, version string) (embed.Spec, bool) {
	for _, m := range e.allTxts {
		s := m.enc.Spec()
		if s.PairsWith != nil && (s.Name == image || s.PairsWith.Name == image) && s.PairsWith.Version == version {
			return s, true
		}
	}
	return embed.Spec{}, false
}

// TextFor returns the text model that pairs with image model image, or
// the text model itself when image names one.
func (e *Engine) TextFor(image string) (embed.Spec, bool) {
	if m, ok := e.texts[image]; ok {
		return m.enc.Spec(), true
	}
	for _, n := range e.tnames {
		if s := e.texts[n].enc.Spec(); pairName(s) == image {
			return s, true
		}
	}
	return embed.Spec{}, false
}

func (e *Engine) unknown(model string, kind string) error {
	served := append(append([]string(nil), e.names...), e.tnames...)
	return fmt.Errorf("%w: no %s model %q here (served: %s)", ErrUnknownModel, kind, model, strings.Join(served, ", "))
}

func (e *Engine) image(model string) (*imageModel, error) {
	m, ok := e.images[model]
	if !ok {
		return nil, e.unknown(model, "image")
	}
	return m, nil
}

// Prepare decodes data and returns model's input for it. decoded, when not
// nil, is called once data is no longer needed.
func (e *Engine) Prepare(model string, data []byte, decoded func()) ([]float32, error) {
	m, err := e.image(model)
	if err != nil {
		return nil, err
	}
	px := m.b.NewInput()
	if _, _, err := e.prep.Prepare(data, []int{m.idx}, [][]float32{px}, decoded); err != nil {
		return nil, err
	}
	return px, nil
}

// EmbedPrepared embeds an input that Prepare made, in a batch with
// whatever else is waiting for the model.
func (e *Engine) EmbedPrepared(ctx context.Context, model string, px []float32) ([]float32, error) {
	m, err := e.image(model)
	if err != nil {
		return nil, err
	}
	v, err := m.b.Embed(ctx, px)
	if err != nil {
		return nil, err
	}
	return v[0], nil
}

// EmbedImage turns image bytes into model's L2-normalised vector.
func (e *Engine) EmbedImage(ctx context.Context, model string, data []byte) ([]float32, error) {
	px, err := e.Prepare(model, data, nil)
	if err != nil {
		return nil, err
	}
	return e.EmbedPrepared(ctx, model, px)
}

// EmbedImages embeds n images, read by load(i), and hands each outcome to
// emit in order i = 0..n-1, from the calling goroutine. Images are read,
// decoded and embedded concurrently, a bounded number at a time; an image
// that fails (load's error, a corrupt file) is emitted with its error and
// the rest go on. It stops early when emit returns an error or ctx ends.
func (e *Engine) EmbedImages(ctx context.Context, model string, n int, load func(i int) ([]byte, error),
	emit func(i int, vec []float32, err error) error) error {
	if _, err := e.image(model); err != nil {
		return err
	}
	type outcome struct {
		vec []float32
		err error
	}
	// The feeder starts image i's goroutine and queues its answer channel
	// in order; the queue's room bounds the images in flight.
	order := make(chan chan outcome, e.window)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	fed := make(chan struct{})
	defer func() {
		cancel()
		<-fed
		wg.Wait()
	}()
	go func() {
		defer close(fed)
		defer close(order)
		for i := range n {
			ch := make(chan outcome, 1)
			select {
			case order <- ch:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				data, err := load(i)
				var v []float32
				if err == nil {
					v, err = e.EmbedImage(ctx, model, data)
				}
				ch <- outcome{v, err}
			}()
		}
	}()
	i := 0
	for ch := range order {
		var o outcome
		select {
		case o = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := emit(i, o.vec, o.err); err != nil {
			return err
		}
		i++
	}
	return ctx.Err()
}

// EmbedText turns a text into text model's L2-normalised vector.
func (e *Engine) EmbedText(ctx context.Context, model, text string) ([]float32, error) {
	vs, err := e.EmbedTexts(ctx, model, []string{text})
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

// EmbedTexts embeds texts with text model model, in batches shared with
// every other caller's; any text that cannot be tokenised fails the call,
// naming it.
func (e *Engine) EmbedTexts(ctx context.Context, model string, texts []string) ([][]float32, error) {
	m, ok := e.texts[model]
	if !ok {
		return nil, e.unknown(model, "text")
	}
	ids := make([][]int64, len(texts))
	for i, t := range texts {
		ids[i] = m.b.NewInput()
		if err := m.enc.Tokenize(t, ids[i]); err != nil {
			return nil, fmt.Errorf("text %d: %w", i+1, err)
		}
	}
	return m.b.Embed(ctx, ids...)
}
