package embed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/embedfleet/embedfleet/shared/objstore"
)

// A models folder holds one sub-folder per model, named after it, with
// spec.json and the ONNX file:
//
//	models/clip-vit-b32/spec.json
//	models/clip-vit-b32/model.onnx

// ErrModelNotFound is returned when no model of that name is in the models
// folder.
var ErrModelNotFound = errors.New("model not found")

// Resolve returns the folder of model ref: ref itself when it is a folder
// that holds a spec.json, else dir/ref.
func Resolve(dir, ref string) (string, error) {
	if st, err := os.Stat(filepath.Join(ref, SpecFile)); err == nil && !st.IsDir() {
		return ref, nil
	}
	if !namePattern.MatchString(ref) {
		return "", fmt.Errorf("%w: %q is neither a model name nor a folder with a %s", ErrModelNotFound, ref, SpecFile)
	}
	p := filepath.Join(dir, ref)
	if _, err := os.Stat(filepath.Join(p, SpecFile)); err != nil {
		hint := ""
		if _, ok := Builtin(ref); ok {
			hint = fmt.Sprintf("; fetch it with `embedfleet models pull --model %s --repo REPO --revision REV`, or export one with deploy/export/export.py", ref)
		}
		return "", fmt.Errorf("%w: %s has no %s%s", ErrModelNotFound, p, SpecFile, hint)
	}
	return p, nil
}

// Installed lists the models in dir, sorted by name. A folder whose spec
// does not load is listed with its error.
type Installed struct {
	Dir  string
	Spec Spec
	Err  error
}

// List returns the models installed in dir.
func List(dir string) ([]Installed, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Installed
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, SpecFile)); err != nil {
			continue
		}
		s, err := LoadSpec(p)
		out = append(out, Installed{Dir: p, Spec: s, Err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out, nil
}

// Verify re-hashes a model's ONNX file against its spec's version and checks
// its tensors, without starting a session.
func Verify(dir string) (Spec, error) {
	spec, err := LoadSpec(dir)
	if err != nil {
		return spec, err
	}
	if spec.Version == "" {
		return spec, fmt.Errorf("%w: %s: spec has no version to verify against", ErrInvalidSpec, spec.Name)
	}
	data, err := os.ReadFile(filepath.Join(dir, spec.ONNX))
	if err != nil {
		return spec, err
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != spec.Version {
		return spec, fmt.Errorf("%w: %s: file has %s, spec says %s", ErrModelMismatch, spec.Name, got, spec.Version)
	}
	// A temporary ONNX Runtime session: verification also proves the file
	// loads, not only that its graph declares the right tensors.
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return spec, fmt.Errorf("model %s: read tensors: %w", spec.Name, err)
	}
	if err := checkPrecision(spec, data); err != nil {
		return spec, err
	}
	if spec.IsText() {
		return spec, checkTextTensors(spec, ins, outs)
	}
	params, err := spec.Preprocess.Params()
	if err != nil {
		return spec, err
	}
	return spec, checkTensors(spec, params, ins, outs)
}

// PullOptions say where an ONNX export is on a Hugging Face-style hub and
// what it is.
type PullOptions struct {
	Endpoint string // hub base URL, e.g. https://huggingface.co
	Repo     string // e.g. Xenova/clip-vit-base-patch32
	Revision string // a commit id: pin it, branches move
	File     string // path of the ONNX file in the repo, e.g. onnx/vision_model.onnx
	Model    string // built-in spec to describe it: clip-vit-b32 | dinov2-base
	Name     string // folder and collection name; default Model
	SHA256   string // expected hex digest of the file; empty: record what arrives
	Input    string // tensor names, when the export differs from the built-in spec
	Output   string
	Dim      int // embedding dimension, when not the built-in spec's (e.g. dinov2-small: 384)
	// PairsWith: for a text model, the installed image model (in the same
	// models folder) it pairs with; default the built-in spec's. Its
	// version is recorded, so that the text tower searches only the
	// collection that very image tower made.
	PairsWith string
	// TokenizerDir: for a text model, the folder of vocab.json and
	// merges.txt in the repository; default its root.
	TokenizerDir string
	Token        string // bearer token for private repos (never logged)
	Client       *http.Client
	Progress     func(done, total int64) // may be nil
	// MaxBytes bounds each file downloaded (the ONNX file and a text
	// model's tokenizer files); default DefaultPullMaxBytes. A larger one
	// fails, and nothing is kept.
	MaxBytes int64
	// IdleTimeout fails a download when no byte arrives for this long
	// (headers included); default DefaultPullIdleTimeout.
	IdleTimeout time.Duration
}

// Bounds of one download by Pull.
const (
	DefaultPullMaxBytes    = 4 << 30
	DefaultPullIdleTimeout = time.Minute
	maxTokenizerBytes      = 64 << 20 // vocab.json is 1.6 MB, merges.txt 0.5 MB
)

// ErrDownload is wrapped by a download that went over its size cap or
// stalled.
var ErrDownload = errors.New("download refused")

// Pull downloads an ONNX export into dir/<name>/ with a spec.json made from
// the built-in spec, the file's sha256 and its source, and checks the
// model's tensors against the spec before keeping anything.
func Pull(ctx context.Context, dir string, o PullOptions) (Spec, error) {
	spec, ok := Builtin(o.Model)
	if !ok {
		return Spec{}, fmt.Errorf("%w: unknown model %q (built-in: %s)", ErrInvalidSpec, o.Model, strings.Join(BuiltinNames(), ", "))
	}
	if o.Repo == "" || o.Revision == "" || o.File == "" {
		return Spec{}, fmt.Errorf("pull: repo, revision and file are required")
	}
	if o.Name != "" {
		spec.Name = o.Name
	}
	if o.Input != "" {
		spec.Input = o.Input
	}
	if o.Output != "" {
		spec.Output = o.Output
	}
	if o.Dim > 0 {
		spec.Dim = o.Dim
	}
	spec.ONNX = "model.onnx"
	if spec.IsText() {
		if o.PairsWith != "" {
			spec.PairsWith = &ModelRef{Name: o.PairsWith}
		}
		image, err := LoadSpec(filepath.Join(dir, spec.PairsWith.Name))
		if err != nil {
			return Spec{}, fmt.Errorf("pull: text model %s pairs with the image model %s, which is not installed in %s: pull it first (%v)",
				spec.Name, spec.PairsWith.Name, dir, err)
		}
		if image.IsText() || image.Version == "" {
			return Spec{}, fmt.Errorf("pull: %s is not an image model with a version to pair with", spec.PairsWith.Name)
		}
		spec.PairsWith.Version = image.Version
	}
	if err := spec.Validate(); err != nil {
		return Spec{}, err
	}
	if o.Endpoint == "" {
		o.Endpoint = "https://huggingface.co"
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultPullMaxBytes
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultPullIdleTimeout
	}
	u, err := url.JoinPath(o.Endpoint, o.Repo, "resolve", o.Revision, o.File)
	if err != nil {
		return Spec{}, fmt.Errorf("pull: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Spec{}, err
	}
	tmp, err := os.MkdirTemp(dir, ".pull-"+spec.Name+"-")
	if err != nil {
		return Spec{}, err
	}
	defer os.RemoveAll(tmp)

	sum, err := download(ctx, o, u, filepath.Join(tmp, spec.ONNX))
	if err != nil {
		return Spec{}, err
	}
	if o.SHA256 != "" && !strings.EqualFold(strings.TrimPrefix(o.SHA256, "sha256:"), sum) {
		return Spec{}, fmt.Errorf("%w: %s: downloaded file has sha256 %s, expected %s", ErrModelMismatch, u, sum, o.SHA256)
	}
	spec.Version = "sha256:" + sum
	spec.Source = map[string]string{"endpoint": o.Endpoint, "repo": o.Repo, "revision": o.Revision, "file": o.File, "sha256": sum}
	if spec.IsText() {
		// The checkpoint's own tokenizer files, beside the model.
		t := *spec.Tokenizer
		for _, f := range []struct{ name, at string }{{t.Vocab, "vocab"}, {t.Merges, "merges"}} {
			tu, err := url.JoinPath(o.Endpoint, o.Repo, "resolve", o.Revision, strings.TrimPrefix(filepath.ToSlash(filepath.Join(o.TokenizerDir, f.name)), "/"))
			if err != nil {
				return Spec{}, fmt.Errorf("pull: %w", err)
			}
			sum, err := download(ctx, PullOptions{Token: o.Token, Client: o.Client, MaxBytes: min(o.MaxBytes, maxTokenizerBytes), IdleTimeout: o.IdleTimeout},
				tu, filepath.Join(tmp, f.name))
			if err != nil {
				return Spec{}, fmt.Errorf("pull: the tokenizer's %s: %w", f.name, err)
			}
			if f.at == "vocab" {
				t.VocabSHA256 = sum
			} else {
				t.MergesSHA256 = sum
			}
		}
		if _, err := loadTokenizer(tmp, Spec{Name: spec.Name, Tokenizer: &t}, ""); err != nil {
			return Spec{}, fmt.Errorf("pull: %s's tokenizer files: %w", o.Repo, err)
		}
		spec.Tokenizer = &t
	}
	b, _ := json.MarshalIndent(spec, "", " ")
	if err := os.WriteFile(filepath.Join(tmp, SpecFile), append(b, '\n'), 0o644); err != nil {
		return Spec{}, err
	}
	if _, err := Verify(tmp); err != nil {
		return Spec{}, fmt.Errorf("pull: %s is not a %s export: %w", u, o.Model, err)
	}
	final := filepath.Join(dir, spec.Name)
	if err := os.RemoveAll(final); err != nil {
		return Spec{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// download writes the body of u to path and returns its sha256, within
// o.MaxBytes and failing when nothing arrives for o.IdleTimeout.
func download(ctx context.Context, o PullOptions, u, path string) (string, error) {
	ctx, idle, stop := objstore.WatchIdle(ctx, o.IdleTimeout, "GET "+u)
	defer stop()
	fail := func(err error) error {
		if c := objstore.Stalled(ctx); c != nil {
			return fmt.Errorf("pull: %w: %w", ErrDownload, c)
		}
		return fmt.Errorf("pull: GET %s: %w", u, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return "", fail(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("pull: GET %s: %s", u, resp.Status)
	}
	tooLarge := func(n int64) error {
		return fmt.Errorf("pull: %w: GET %s: the file is %d bytes or more, over the limit of %d MiB", ErrDownload, u, n, o.MaxBytes>>20)
	}
	if resp.ContentLength > o.MaxBytes {
		return "", tooLarge(resp.ContentLength)
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	r := idle.Reader(io.LimitReader(resp.Body, o.MaxBytes+1))
	if o.Progress != nil {
		r = &progressReader{r: r, total: resp.ContentLength, fn: o.Progress}
	}
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return "", fail(err)
	}
	if n > o.MaxBytes {
		return "", tooLarge(n)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.fn(p.done, p.total)
	return n, err
}
