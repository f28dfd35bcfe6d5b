package embed

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/embedfleet/embedfleet/shared/cliptok"
)

// ErrNotPaired is returned when a text model is used with an image model
// (or a collection) other than the one it pairs with: their vectors are in
// different spaces, and a search would answer nonsense.
var ErrNotPaired = errors.New("text model does not pair with this image model")

// TextModel is an ONNX text encoder with its tokenizer: CLIP's text tower,
// whose vectors live in the space of the image tower it pairs with.
// Tokenize and Embed are safe for concurrent use.
type TextModel struct {
	spec Spec
	tok  *cliptok.Tokenizer
	sess *ort.DynamicAdvancedSession
	ctx  int
}

// OpenText loads the text model in dir: spec.json (kind text), the ONNX
// file, and the tokenizer files the spec names (from dir, else from
// opts.TokenizerDir). Init must have loaded ONNX Runtime first.
func OpenText(dir string, opts Options) (*TextModel, error) {
	spec, err := LoadSpec(dir)
	if err != nil {
		return nil, err
	}
	if !spec.IsText() {
		return nil, fmt.Errorf("%w: %s is an image model; open it with Open", ErrInvalidSpec, spec.Name)
	}
	tok, err := loadTokenizer(dir, spec, opts.TokenizerDir)
	if err != nil {
		return nil, err
	}
	data, ins, outs, err := readONNX(dir, &spec, opts)
	if err != nil {
		return nil, err
	}
	if err := checkTextTensors(spec, ins, outs); err != nil {
		return nil, err
	}
	if err := checkPrecision(spec, data); err != nil {
		return nil, err
	}
	sess, err := newSession(data, spec, opts)
	if err != nil {
		return nil, err
	}
	m := &TextModel{spec: spec, tok: tok, sess: sess, ctx: spec.Tokenizer.ContextLength}
	// The empty text through the model: the output's real shape must be the
	// spec's, and the first query does not pay for the warm-up.
	ids := make([]int64, m.ctx)
	err = m.Tokenize("", ids)
	if err == nil {
		err = m.Embed(ids, 1, make([]float32, spec.Dim))
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// TokenizerFiles returns the paths of a text model's vocabulary and merges:
// in its folder when they are there, else in fallback.
func TokenizerFiles(dir string, spec Spec, fallback string) (vocab, merges string, err error) {
	t := spec.Tokenizer
	if t == nil {
		return "", "", fmt.Errorf("%w: %s has no tokenizer", ErrInvalidSpec, spec.Name)
	}
	for _, d := range []string{dir, fallback} {
		if d == "" {
			continue
		}
		v, m := filepath.Join(d, t.Vocab), filepath.Join(d, t.Merges)
		if fileExists(v) && fileExists(m) {
			return v, m, nil
		}
	}
	hint := "; `embedfleet models pull` fetches them with the model, and deploy/install/deps.sh clip-vocab installs CLIP's (EMBEDFLEET_CLIP_VOCAB)"
	if fallback != "" {
		return "", "", fmt.Errorf("model %s: tokenizer files %s and %s are neither in %s nor in %s%s", spec.Name, t.Vocab, t.Merges, dir, fallback, hint)
	}
	return "", "", fmt.Errorf("model %s: tokenizer files %s and %s are not in %s%s", spec.Name, t.Vocab, t.Merges, dir, hint)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func loadTokenizer(dir string, spec Spec, fallback string) (*cliptok.Tokenizer, error) {
	vp, mp, err := TokenizerFiles(dir, spec, fallback)
	if err != nil {
		return nil, err
	}
	vb, err := os.ReadFile(vp)
	if err != nil {
		return nil, err
	}
	mb, err := os.ReadFile(mp)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path, want string
		data       []byte
	}{{vp, spec.Tokenizer.VocabSHA256, vb}, {mp, spec.Tokenizer.MergesSHA256, mb}} {
		if f.want == "" {
			continue
		}
		sum := sha256.Sum256(f.data)
		if got := hex.EncodeToString(sum[:]); got != f.want {
			return nil, fmt.Errorf("%w: %s: %s has sha256 %s, spec says %s", ErrModelMismatch, spec.Name, f.path, got, f.want)
		}
	}
	tok, err := cliptok.New(vb, mb)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", spec.Name, err)
	}
	return tok, nil
}

// checkTextTensors: the input is int64 [batch, context], the output
// [batch, dim].
func checkTextTensors(spec Spec, ins, outs []ort.InputOutputInfo) error {
	in := findTensor(ins, spec.Input)
	if in == nil {
		return fmt.Errorf("%w: %s: no input named %q", ErrModelMismatch, spec.Name, spec.Input)
	}
	if len(ins) != 1 {
		names := make([]string, len(ins))
		for i, t := range ins {
			names[i] = t.Name
		}
		return fmt.Errorf("%w: %s: the graph takes inputs %v; embedfleet feeds only %q (export the text tower with input_ids alone)", ErrModelMismatch, spec.Name, names, spec.Input)
	}
	ctx := spec.Tokenizer.ContextLength
	if d := in.Dimensions; len(d) != 2 || !fits(d[1], ctx) {
		return fmt.Errorf("%w: %s: input %q has shape %v, want [batch %d]", ErrModelMismatch, spec.Name, spec.Input, in.Dimensions, ctx)
	}
	if in.DataType != 0 && in.DataType != ort.TensorElementDataTypeInt64 {
		return fmt.Errorf("%w: %s: input %q holds %v, want int64 token ids", ErrModelMismatch, spec.Name, spec.Input, in.DataType)
	}
	out := findTensor(outs, spec.Output)
	if out == nil {
		return fmt.Errorf("%w: %s: no output named %q", ErrModelMismatch, spec.Name, spec.Output)
	}
	if d := out.Dimensions; len(d) != 2 || !fits(d[1], spec.Dim) {
		return fmt.Errorf("%w: %s: output %q has shape %v, want [batch %d]", ErrModelMismatch, spec.Name, spec.Output, out.Dimensions, spec.Dim)
	}
	return nil
}

// Spec returns the model's spec, with Version filled in.
func (m *TextModel) Spec() Spec { return m.spec }

// InputSize is the number of ids one text takes: the context length.
func (m *TextModel) InputSize() int { return m.ctx }

// Tokenize writes the InputSize ids of text into ids.
func (m *TextModel) Tokenize(text string, ids []int64) error {
	if len(ids) != m.ctx {
		return fmt.Errorf("tokenize %s: %d ids, want %d", m.spec.Name, len(ids), m.ctx)
	}
	return m.tok.Encode(text, ids)
}

// Embed runs n tokenised texts (ids holds n*InputSize() values) and writes
// n L2-normalised vectors of Spec().Dim values into out.
func (m *TextModel) Embed(ids []int64, n int, out []float32) error {
	if n <= 0 || len(ids) != n*m.ctx {
		return fmt.Errorf("embed %s: %d ids for %d texts, want %d", m.spec.Name, len(ids), n, n*m.ctx)
	}
	if len(out) != n*m.spec.Dim {
		return fmt.Errorf("embed %s: output holds %d values, want %d", m.spec.Name, len(out), n*m.spec.Dim)
	}
	vocab := int64(m.tok.VocabSize())
	for _, id := range ids {
		if id < 0 || id >= vocab {
			return fmt.Errorf("embed %s: token id %d outside the vocabulary of %d", m.spec.Name, id, vocab)
		}
	}
	return runBatch(m.sess, m.spec, ort.NewShape(int64(n), int64(m.ctx)), ids, n, out)
}

// CheckPair returns nil when text model t pairs with image model image (its
// name and version), and an ErrNotPaired error that says which differs
// otherwise.
func CheckPair(text, image Spec) error {
	p := text.PairsWith
	switch {
	case p == nil:
		return fmt.Errorf("%w: %s pairs with no image model", ErrNotPaired, text.Name)
	case p.Name != image.Name:
		return fmt.Errorf("%w: %s pairs with %s, not %s", ErrNotPaired, text.Name, p.Name, image.Name)
	case p.Version != image.Version:
		return fmt.Errorf("%w: %s pairs with %s version %s, but that model is version %s (export or pull the two towers of one checkpoint)",
			ErrNotPaired, text.Name, p.Name, short(p.Version), short(image.Version))
	}
	return nil
}

func short(v string) string {
	if len(v) > 19 {
		return v[:19]
	}
	return v
}

// Close frees the session.
func (m *TextModel) Close() error { return m.sess.Destroy() }
