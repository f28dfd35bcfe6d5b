package embed

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// Execution providers.
const (
	ProviderCPU  = "cpu"
	ProviderCUDA = "cuda"
)

// ErrModelMismatch is returned when the ONNX file is not the one its spec
// describes (another sha256, or tensors of other names or shapes).
var ErrModelMismatch = errors.New("model does not match its spec")

// Options tune how a model runs.
type Options struct {
	// IntraOpThreads is ONNX Runtime's thread count inside one run; 0 lets
	// it choose (one per core).
	IntraOpThreads int
	// Provider is ProviderCPU (the default) or ProviderCUDA.
	Provider string
	// DeviceID selects the GPU for ProviderCUDA.
	DeviceID int
	// SkipHashCheck trusts the spec's version instead of hashing the ONNX
	// file at open (a few hundred MB read once).
	SkipHashCheck bool
	// TokenizerDir is where a text model's tokenizer files are looked for
	// when its own folder lacks them: deploy/install/deps.sh clip-vocab
	// installs CLIP's (EMBEDFLEET_CLIP_VOCAB). Their sha256, when the spec
	// records it, is checked wherever they are found.
	TokenizerDir string
}

// Model is an ONNX image encoder ready to run. Embed is safe for concurrent
// use (ONNX Runtime serialises nothing across runs of one session); the best
// throughput comes from one goroutine feeding full batches.
type Model struct {
	spec          Spec
	params        imageprep.Params
	sess          *ort.DynamicAdvancedSession
	height, width int
}

// Open loads the model in dir (spec.json and the ONNX file it names). Init
// must have loaded ONNX Runtime first.
func Open(dir string, opts Options) (*Model, error) {
	spec, err := LoadSpec(dir)
	if err != nil {
		return nil, err
	}
	if spec.IsText() {
		return nil, fmt.Errorf("%w: %s is a text model; open it with OpenText", ErrInvalidSpec, spec.Name)
	}
	params, err := spec.Preprocess.Params()
	if err != nil {
		return nil, err
	}
	data, ins, outs, err := readONNX(dir, &spec, opts)
	if err != nil {
		return nil, err
	}
	if err := checkTensors(spec, params, ins, outs); err != nil {
		return nil, err
	}
	if err := checkPrecision(spec, data); err != nil {
		return nil, err
	}
	sess, err := newSession(data, spec, opts)
	if err != nil {
		return nil, err
	}
	m := &Model{spec: spec, params: params, sess: sess, height: params.CropHeight, width: params.CropWidth}
	// One image of zeros through the model: the output's real shape must be
	// the spec's (a graph may leave it symbolic), and the first batch of
	// real work does not pay for the engine's warm-up.
	if err := m.Embed(make([]float32, m.InputSize()), 1, make([]float32, spec.Dim)); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// readONNX reads spec's ONNX file, checks its sha256 against the spec's
// version (filling in a missing one) and returns its declared tensors.
func readONNX(dir string, spec *Spec, opts Options) (data []byte, ins, outs []ort.InputOutputInfo, err error) {
	path := filepath.Join(dir, spec.ONNX)
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("model %s: %w", spec.Name, err)
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); spec.Version == "" {
		spec.Version = got
	} else if !opts.SkipHashCheck && got != spec.Version {
		return nil, nil, nil, fmt.Errorf("%w: %s: %s has %s, spec says %s", ErrModelMismatch, spec.Name, path, got, spec.Version)
	}
	ins, outs, err = graphIO(data)
	if err != nil {
		// Not a graph this reader understands: let ONNX Runtime read it
		// (in a temporary session) and judge it.
		if ins, outs, err = ort.GetInputOutputInfoWithONNXData(data); err != nil {
			return nil, nil, nil, fmt.Errorf("%w: %s: %s is not a model ONNX Runtime can load: %v", ErrModelMismatch, spec.Name, path, err)
		}
	}
	return data, ins, outs, nil
}

func newSession(data []byte, spec Spec, opts Options) (*ort.DynamicAdvancedSession, error) {
	so, err := sessionOptions(spec, opts)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", spec.Name, err)
	}
	defer so.Destroy()
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{spec.Input}, []string{spec.Output}, so)
	if err != nil {
		return nil, fmt.Errorf("model %s: onnx runtime session: %w", spec.Name, err)
	}
	return sess, nil
}

func sessionOptions(spec Spec, opts Options) (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	if spec.Precision == PrecisionInt8 && int8Saturates() {
		// Agreement with fp32 over speed: the exporter's check ran on
		// some other CPU, and a worker's answers must not depend on which
		// one it landed on.
		if err := so.AddSessionConfigEntry(x64QuantPrecision, "1"); err != nil {
			so.Destroy()
			return nil, fmt.Errorf("%s: %w", x64QuantPrecision, err)
		}
	}
	if opts.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
			so.Destroy()
			return nil, err
		}
	}
	switch opts.Provider {
	case "", ProviderCPU:
	case ProviderCUDA:
		cuda, err := ort.NewCUDAProviderOptions()
		if err == nil {
			err = cuda.Update(map[string]string{"device_id": strconv.Itoa(opts.DeviceID)})
			if err == nil {
				err = so.AppendExecutionProviderCUDA(cuda)
			}
			cuda.Destroy()
		}
		if err != nil {
			so.Destroy()
			return nil, cudaError(err)
		}
	default:
		so.Destroy()
		return nil, fmt.Errorf("unknown execution provider %q (want cpu or cuda)", opts.Provider)
	}
	return so, nil
}

// checkTensors compares the model's declared inputs and outputs with spec.
func checkTensors(spec Spec, p imageprep.Params, ins, outs []ort.InputOutputInfo) error {
	in := findTensor(ins, spec.Input)
	if in == nil {
		return fmt.Errorf("%w: %s: no input named %q", ErrModelMismatch, spec.Name, spec.Input)
	}
	if d := in.Dimensions; len(d) != 4 || !fits(d[1], 3) || !fits(d[2], p.CropHeight) || !fits(d[3], p.CropWidth) {
		return fmt.Errorf("%w: %s: input %q has shape %v, want [batch 3 %d %d]", ErrModelMismatch, spec.Name, spec.Input, in.Dimensions, p.CropHeight, p.CropWidth)
	}
	out := findTensor(outs, spec.Output)
	if out == nil {
		return fmt.Errorf("%w: %s: no output named %q", ErrModelMismatch, spec.Name, spec.Output)
	}
	rank := 2
	if spec.OutputKind == OutputTokens {
		rank = 3
	}
	if d := out.Dimensions; len(d) != rank || !fits(d[rank-1], spec.Dim) {
		return fmt.Errorf("%w: %s: output %q has shape %v, want rank %d ending in %d", ErrModelMismatch, spec.Name, spec.Output, out.Dimensions, rank, spec.Dim)
	}
	return nil
}

func findTensor(list []ort.InputOutputInfo, name string) *ort.InputOutputInfo {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func fits(d int64, want int) bool { return d < 0 || d == int64(want) }

// Spec returns the model's spec, with Version filled in.
func (m *Model) Spec() Spec { return m.spec }

// Params returns the preprocessing the model expects.
func (m *Model) Params() imageprep.Params { return m.params }

// InputSize is the number of float32 values one image takes in a batch.
func (m *Model) InputSize() int { return 3 * m.height * m.width }

// Embed runs a batch of n preprocessed images (pixels holds n*InputSize()
// values, channels-first) and writes n L2-normalised vectors of Spec().Dim
// values into out.
func (m *Model) Embed(pixels []float32, n int, out []float32) error {
	if n <= 0 || len(pixels) != n*m.InputSize() {
		return fmt.Errorf("embed %s: %d values for %d images, want %d", m.spec.Name, len(pixels), n, n*m.InputSize())
	}
	dim := m.spec.Dim
	if len(out) != n*dim {
		return fmt.Errorf("embed %s: output holds %d values, want %d", m.spec.Name, len(out), n*dim)
	}
	return runBatch(m.sess, m.spec, ort.NewShape(int64(n), 3, int64(m.height), int64(m.width)), pixels, n, out)
}

// runBatch runs one batch of n inputs of shape through sess and pools the
// output into out: the run both kinds of model share.
func runBatch[E float32 | int64](sess *ort.DynamicAdvancedSession, spec Spec, shape ort.Shape, data []E, n int, out []float32) error {
	in, err := ort.NewTensor(shape, data)
	if err != nil {
		return fmt.Errorf("embed %s: %w", spec.Name, err)
	}
	defer in.Destroy()
	outputs := []ort.Value{nil}
	if err := sess.Run([]ort.Value{in}, outputs); err != nil {
		return fmt.Errorf("embed %s: run: %w", spec.Name, err)
	}
	defer outputs[0].Destroy()
	t, ok := outputs[0].(*ort.Tensor[float32])
	if !ok {
		return fmt.Errorf("%w: %s: output is %T, want a float32 tensor", ErrModelMismatch, spec.Name, outputs[0])
	}
	return pool(spec, t.GetShape(), t.GetData(), n, out)
}

// pool reduces the raw output to one L2-normalised vector per image.
func pool(spec Spec, shape ort.Shape, data []float32, n int, out []float32) error {
	dim := spec.Dim
	switch spec.OutputKind {
	case OutputEmbeds:
		if len(shape) != 2 || shape[0] != int64(n) || shape[1] != int64(dim) {
			return fmt.Errorf("%w: %s: output shape %v, want [%d %d]", ErrModelMismatch, spec.Name, shape, n, dim)
		}
		copy(out, data)
	case OutputTokens:
		if len(shape) != 3 || shape[0] != int64(n) || shape[2] != int64(dim) || shape[1] < 1 {
			return fmt.Errorf("%w: %s: output shape %v, want [%d tokens %d]", ErrModelMismatch, spec.Name, shape, n, dim)
		}
		tokens := int(shape[1])
		acc := make([]float64, dim)
		for i := 0; i < n; i++ {
			img := data[i*tokens*dim : (i+1)*tokens*dim]
			dst := out[i*dim : (i+1)*dim]
			if spec.Pooling == PoolCLS {
				copy(dst, img[:dim])
				continue
			}
			clear(acc)
			for t := 0; t < tokens; t++ {
				for j, v := range img[t*dim : (t+1)*dim] {
					acc[j] += float64(v)
				}
			}
			for j := range dst {
				dst[j] = float32(acc[j] / float64(tokens))
			}
		}
	}
	for i := 0; i < n; i++ {
		Normalize(out[i*dim : (i+1)*dim])
	}
	return nil
}

// Normalize scales v to unit L2 norm in place; a zero vector stays zero.
func Normalize(v []float32) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if ss == 0 {
		return
	}
	inv := 1 / math.Sqrt(ss)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
}

// Cosine returns the cosine similarity of a and b.
func Cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

// Close frees the session.
func (m *Model) Close() error { return m.sess.Destroy() }

// missingLib finds the library a loader error names.
var missingLib = regexp.MustCompile(`(lib[\w.+-]+\.so[.\d]*): cannot open shared object file`)

// cudaError says why the CUDA provider could not be added: a CPU build of
// ONNX Runtime, or a GPU build whose CUDA libraries the loader cannot find.
func cudaError(err error) error {
	mu.Lock()
	path, version := loadedPath, loadedVersion
	mu.Unlock()
	if m := missingLib.FindStringSubmatch(err.Error()); m != nil && !strings.Contains(m[1], "onnxruntime_providers") {
		return fmt.Errorf("the CUDA execution provider is not available: the GPU build of ONNX Runtime at %s (%s) cannot load %s; "+
			"its CUDA 13 and cuDNN 9 libraries must be on the loader path (LD_LIBRARY_PATH), e.g. the nvidia-* wheels of a "+
			"PyTorch cu130 environment, or Dockerfile.gpu's CUDA base image: %w", path, version, m[1], err)
	}
	return fmt.Errorf("the CUDA execution provider is not available in the ONNX Runtime at %s (%s), a CPU build; "+
		"install Microsoft's GPU build %s with deploy/install/deps.sh gpu (--ort-gpu-lib, EMBEDFLEET_ORT_GPU_LIB): %w",
		path, version, ORTGPUVersion, err)
}
