package embed

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// Output kinds: what the model's output tensor holds.
const (
	OutputEmbeds = "embeds" // [batch, dim]: one vector per image
	OutputTokens = "tokens" // [batch, tokens, dim]: pooled by Pooling
)

// Poolings of a tokens output.
const (
	PoolMean = "mean" // mean over all tokens (CLS and patches), as the article does for DINOv2
	PoolCLS  = "cls"  // the first token
)

// Kinds of model: what its input is.
const (
	KindImage = "image" // float32 pixels [batch, 3, H, W]; the default
	KindText  = "text"  // int64 token ids [batch, context]
)

// TokenizerCLIP is CLIP's byte-level BPE tokenizer (package cliptok).
const TokenizerCLIP = "clip-bpe"

// Precisions of a model's weights (inputs and outputs are float32 in all).
const (
	PrecisionFP32 = "fp32"
	PrecisionFP16 = "fp16"
	PrecisionInt8 = "int8" // ONNX Runtime quantisation: int8 weights, activations quantised at run time
)

// SpecFile is the name of the spec beside each model's ONNX file.
const SpecFile = "spec.json"

// ErrInvalidSpec is wrapped by every spec validation error.
var ErrInvalidSpec = errors.New("invalid model spec")

// Preprocess is the JSON form of imageprep.Params.
type Preprocess struct {
	ShortestEdge  int        `json:"shortest_edge"`
	CropHeight    int        `json:"crop_height"`
	CropWidth     int        `json:"crop_width"`
	Interpolation string     `json:"interpolation"` // bicubic | bilinear
	RescaleFactor float64    `json:"rescale_factor"`
	Mean          [3]float32 `json:"mean"`
	Std           [3]float32 `json:"std"`
}

// Params converts to imageprep.Params.
func (p Preprocess) Params() (imageprep.Params, error) {
	var interp imageprep.Interpolation
	switch p.Interpolation {
	case "bicubic", "":
		interp = imageprep.Bicubic
	case "bilinear":
		interp = imageprep.Bilinear
	default:
		return imageprep.Params{}, fmt.Errorf("%w: interpolation %q (want bicubic or bilinear)", ErrInvalidSpec, p.Interpolation)
	}
	ip := imageprep.Params{
		ShortestEdge: p.ShortestEdge, CropHeight: p.CropHeight, CropWidth: p.CropWidth,
		Interpolation: interp, RescaleFactor: p.RescaleFactor, Mean: p.Mean, Std: p.Std,
	}
	if err := ip.Validate(); err != nil {
		return imageprep.Params{}, fmt.Errorf("%w: %v", ErrInvalidSpec, err)
	}
	return ip, nil
}

func preprocessOf(p imageprep.Params) Preprocess {
	return Preprocess{
		ShortestEdge: p.ShortestEdge, CropHeight: p.CropHeight, CropWidth: p.CropWidth,
		Interpolation: p.Interpolation.String(), RescaleFactor: p.RescaleFactor, Mean: p.Mean, Std: p.Std,
	}
}

// Spec describes one ONNX encoder: how to feed it and how to read it. It
// is stored as spec.json beside the ONNX file. An image model's vectors
// fill the collection named after it; a text model (Kind text) makes query
// vectors for the collection of the image model it pairs with.
type Spec struct {
	Name       string     `json:"name"`           // also names the Milvus collection of an image model
	Kind       string     `json:"kind,omitempty"` // image (default) | text
	Version    string     `json:"version"`        // "sha256:" + hex digest of the ONNX file
	ONNX       string     `json:"onnx"`           // file name, relative to the spec's folder
	Input      string     `json:"input"`          // input tensor name: float32 [batch, 3, H, W], or int64 [batch, context] for text
	Output     string     `json:"output"`         // output tensor name
	OutputKind string     `json:"output_kind"`
	Pooling    string     `json:"pooling,omitempty"` // for OutputTokens
	Dim        int        `json:"dim"`
	Normalized bool       `json:"normalized"`           // whether the model's outputs are already L2-normalised
	Preprocess Preprocess `json:"preprocess,omitzero"`  // image models
	Tokenizer  *Tokenizer `json:"tokenizer,omitempty"`  // text models
	PairsWith  *ModelRef  `json:"pairs_with,omitempty"` // text models: the image tower whose collection it searches
	Precision  string     `json:"precision,omitempty"`  // fp32 | fp16 | int8 (weights; inputs and outputs are float32)
	Source     any        `json:"source,omitempty"`     // where the weights came from, as recorded by the exporter
}

// Tokenizer says how a text model's input ids are made.
type Tokenizer struct {
	Type          string `json:"type"`           // clip-bpe
	Vocab         string `json:"vocab"`          // vocab.json, relative to the spec's folder
	Merges        string `json:"merges"`         // merges.txt
	ContextLength int    `json:"context_length"` // ids per text: 77 for CLIP
	VocabSHA256   string `json:"vocab_sha256,omitempty"`
	MergesSHA256  string `json:"merges_sha256,omitempty"`
}

// ModelRef names one version of a model.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// IsText reports whether the spec is of a text model.
func (s Spec) IsText() bool { return s.Kind == KindText }

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// ErrFileName is wrapped by ValidFileName's errors.
var ErrFileName = errors.New("invalid file name")

// ValidFileName checks a file name that came from a spec, a bucket or a URL
// before any path is built from it: one name in the model's own folder, at
// most 255 bytes, with no separator, no "." or "..", not absolute, without
// control characters. The models bucket is trusted to hold models, not to
// choose where they are written.
func ValidFileName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w %q: want a file name in the model's folder", ErrFileName, name)
	case len(name) > 255:
		return fmt.Errorf("%w: %d bytes, want at most 255", ErrFileName, len(name))
	case strings.ContainsAny(name, `/\`) || filepath.IsAbs(name) || filepath.Base(name) != name:
		return fmt.Errorf("%w %s: a file name cannot hold a path separator", ErrFileName, escape.Quoted(name))
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }):
		return fmt.Errorf("%w %s: control characters or invalid UTF-8", ErrFileName, escape.Quoted(name))
	}
	return nil
}

// Validate checks every field that the runtime relies on.
func (s Spec) Validate() error {
	switch {
	case !namePattern.MatchString(s.Name):
		return fmt.Errorf("%w: name %q (want lowercase letters, digits, - and _, starting with a letter)", ErrInvalidSpec, s.Name)
	case s.Input == "" || s.Output == "":
		return fmt.Errorf("%w: %s: input and output tensor names are required", ErrInvalidSpec, s.Name)
	case s.Dim <= 0:
		return fmt.Errorf("%w: %s: dim %d", ErrInvalidSpec, s.Name, s.Dim)
	}
	if s.ONNX != "" {
		if err := ValidFileName(s.ONNX); err != nil {
			return fmt.Errorf("%w: %s: onnx: %v", ErrInvalidSpec, s.Name, err)
		}
		if s.ONNX == SpecFile {
			return fmt.Errorf("%w: %s: onnx cannot be %s", ErrInvalidSpec, s.Name, SpecFile)
		}
	}
	if s.Version != "" && !strings.HasPrefix(s.Version, "sha256:") {
		return fmt.Errorf("%w: %s: version %q (want sha256:<hex>)", ErrInvalidSpec, s.Name, s.Version)
	}
	switch s.Precision {
	case "", PrecisionFP32, PrecisionFP16, PrecisionInt8:
	default:
		return fmt.Errorf("%w: %s: precision %q (want fp32, fp16 or int8)", ErrInvalidSpec, s.Name, s.Precision)
	}
	switch s.Kind {
	case "", KindImage:
	case KindText:
		return s.validateText()
	default:
		return fmt.Errorf("%w: %s: kind %q (want image or text)", ErrInvalidSpec, s.Name, s.Kind)
	}
	switch s.OutputKind {
	case OutputEmbeds:
	case OutputTokens:
		if s.Pooling != PoolMean && s.Pooling != PoolCLS {
			return fmt.Errorf("%w: %s: pooling %q (want mean or cls)", ErrInvalidSpec, s.Name, s.Pooling)
		}
	default:
		return fmt.Errorf("%w: %s: output_kind %q (want embeds or tokens)", ErrInvalidSpec, s.Name, s.OutputKind)
	}
	_, err := s.Preprocess.Params()
	return err
}

func (s Spec) validateText() error {
	t, p := s.Tokenizer, s.PairsWith
	switch {
	case s.OutputKind != OutputEmbeds:
		return fmt.Errorf("%w: %s: a text model's output_kind must be embeds, got %q", ErrInvalidSpec, s.Name, s.OutputKind)
	case t == nil:
		return fmt.Errorf("%w: %s: a text model needs a tokenizer", ErrInvalidSpec, s.Name)
	case t.Type != TokenizerCLIP:
		return fmt.Errorf("%w: %s: tokenizer type %q (want %s)", ErrInvalidSpec, s.Name, t.Type, TokenizerCLIP)
	case ValidFileName(t.Vocab) != nil || ValidFileName(t.Merges) != nil || t.Vocab == t.Merges || t.Vocab == s.ONNX || t.Merges == s.ONNX || t.Vocab == SpecFile || t.Merges == SpecFile:
		return fmt.Errorf("%w: %s: tokenizer vocab and merges must be two file names in the model's folder, neither its ONNX file nor %s", ErrInvalidSpec, s.Name, SpecFile)
	case t.ContextLength < 2 || t.ContextLength > 4096:
		return fmt.Errorf("%w: %s: tokenizer context_length %d (want 2 to 4096; CLIP's is 77)", ErrInvalidSpec, s.Name, t.ContextLength)
	case p == nil || !namePattern.MatchString(p.Name):
		return fmt.Errorf("%w: %s: a text model must name the image model it pairs with (pairs_with.name)", ErrInvalidSpec, s.Name)
	case p.Name == s.Name:
		return fmt.Errorf("%w: %s: a text model cannot pair with itself", ErrInvalidSpec, s.Name)
	case !strings.HasPrefix(p.Version, "sha256:"):
		return fmt.Errorf("%w: %s: pairs_with.version %q (want the sha256:<hex> version of %s's image tower)", ErrInvalidSpec, s.Name, p.Version, p.Name)
	}
	return nil
}

// Builtin returns the spec of a built-in model, without file or version:
// the contract that an export of that model must meet.
//
//	clip-vit-b32       CLIP ViT-B/32 image tower with projection: image_embeds, 512
//	clip-vit-b32-text  its text tower with projection: text_embeds, 512, from 77 ids
//	dinov2-base        DINOv2-base: last_hidden_state mean-pooled over all 257 tokens, 768
//
// A built-in text spec's pairs_with has the image model's name but no
// version: that is the installed image model's.
func Builtin(name string) (Spec, bool) {
	switch name {
	case "clip-vit-b32-text":
		return Spec{Name: name, Kind: KindText, Input: "input_ids", Output: "text_embeds", OutputKind: OutputEmbeds, Dim: 512,
			Tokenizer: &Tokenizer{Type: TokenizerCLIP, Vocab: "vocab.json", Merges: "merges.txt", ContextLength: 77},
			PairsWith: &ModelRef{Name: "clip-vit-b32"}}, true
	case "clip-vit-b32":
		return Spec{Name: name, Input: "pixel_values", Output: "image_embeds", OutputKind: OutputEmbeds,
			Dim: 512, Preprocess: preprocessOf(imageprep.CLIP)}, true
	case "dinov2-base":
		return Spec{Name: name, Input: "pixel_values", Output: "last_hidden_state", OutputKind: OutputTokens,
			Pooling: PoolMean, Dim: 768, Preprocess: preprocessOf(imageprep.DINOv2)}, true
	}
	return Spec{}, false
}

// BuiltinNames lists the built-in models.
func BuiltinNames() []string { return []string{"clip-vit-b32", "clip-vit-b32-text", "dinov2-base"} }

// LoadSpec reads dir/spec.json and validates it.
func LoadSpec(dir string) (Spec, error) {
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	if err != nil {
		return Spec{}, fmt.Errorf("model spec: %w", err)
	}
	var s Spec
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("%w: %s: %v", ErrInvalidSpec, filepath.Join(dir, SpecFile), err)
	}
	if s.ONNX == "" {
		s.ONNX = "model.onnx"
	}
	if err := s.Validate(); err != nil {
		return Spec{}, fmt.Errorf("%s: %w", filepath.Join(dir, SpecFile), err)
	}
	return s, nil
}
