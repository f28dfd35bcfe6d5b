package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
)

func newEmbedCmd(g *globalFlags) *cobra.Command {
	var (
		model, format, outPath string
		batchSize, workers     int
	)
	cmd := &cobra.Command{
		Use:   "embed --model MODEL [--format jsonl|npy] [--out FILE] IMAGE...",
		Short: "Embed image files with one model and write the vectors as JSON lines or a .npy matrix",
		Long: `Decode, preprocess and embed image files in batches, decoding on several
cores while the model runs. Vectors are L2-normalised.

--format jsonl (default) writes one line per file, in argument order:
  {"file":"a.jpg","model":"clip-vit-b32","version":"sha256:...","embedding":[...]}
and for a file that cannot be embedded:
  {"file":"bad.jpg","error":"corrupt image: ..."}
--format npy writes a float32 matrix [files, dim] to --out (required) and the
file of each row, one per line, to --out + ".files.txt"; failures go to stderr.

Every file is tried; the command exits with status 1 when any failed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "jsonl" && format != "npy" {
				return fmt.Errorf("--format %q: want jsonl or npy", format)
			}
			if format == "npy" && outPath == "" {
				return errors.New("--format npy needs --out FILE")
			}
			if batchSize < 1 || workers < 1 {
				return fmt.Errorf("--batch and --workers must be at least 1")
			}
			m, err := openModel(g, model)
			if err != nil {
				return err
			}
			defer m.Close()
			var w io.Writer = cmd.OutOrStdout()
			if outPath != "" {
				f, err := os.Create(outPath)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			opts := g.decoderOptions()
			sink, err := newSink(format, w, outPath, m.Spec())
			if err != nil {
				return err
			}
			stats, err := embedFiles(cmd.Context(), m, args, batchSize, workers, opts, sink, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := sink.close(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "embed %s: %d files, %d embedded, %d failed, %.1f img/s\n",
				m.Spec().Name, len(args), stats.ok, stats.failed, float64(stats.ok)/stats.elapsed.Seconds())
			if stats.failed > 0 {
				return fmt.Errorf("%d of %d files failed", stats.failed, len(args))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "model name in --models-dir, or a model folder (required)")
	f.StringVar(&format, "format", "jsonl", "jsonl or npy")
	f.StringVarP(&outPath, "out", "o", "", "output file (default stdout for jsonl)")
	f.IntVar(&batchSize, "batch", 32, "images per inference batch")
	f.IntVar(&workers, "workers", runtime.NumCPU(), "goroutines that decode and preprocess")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

type embedStats struct {
	ok, failed int
	elapsed    time.Duration
}

// prepared is one batch after decoding and preprocessing.
type prepared struct {
	files  []string
	errs   []error // per file; nil when its pixels are in the batch
	pixels []float32
	n      int // images in pixels
}

// embedFiles runs decode+preprocess for batch i+1 while the model embeds
// batch i, and hands results to sink in file order.
func embedFiles(ctx context.Context, m *embed.Model, files []string, batchSize, workers int,
	opts []imageprep.DecoderOption, sink sink, progress io.Writer) (embedStats, error) {
	start := time.Now()
	size, dim := m.InputSize(), m.Spec().Dim
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// One decoder and preprocessor per worker goroutine.
	type tools struct {
		dec *imageprep.Decoder
		pp  *imageprep.Preprocessor
	}
	pool := make(chan tools, workers)
	for range workers {
		pp, err := imageprep.NewPreprocessor(m.Params())
		if err != nil {
			return embedStats{}, err
		}
		pool <- tools{imageprep.NewDecoder(imageprepLimits(), opts...), pp}
	}
	defer func() {
		for range workers {
			(<-pool).dec.Close()
		}
	}()

	batches := make(chan *prepared, 1)
	go func() {
		defer close(batches)
		for lo := 0; lo < len(files); lo += batchSize {
			hi := min(lo+batchSize, len(files))
			b := &prepared{files: files[lo:hi], errs: make([]error, hi-lo), pixels: make([]float32, (hi-lo)*size)}
			slot := make([]int, hi-lo)
			var wg sync.WaitGroup
			for i, path := range b.files {
				t := <-pool
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { pool <- t }()
					b.errs[i] = prepFile(path, t.dec, t.pp, b.pixels[i*size:(i+1)*size])
				}()
			}
			wg.Wait()
			// Compact: successful images first, in order.
			for i := range b.files {
				if b.errs[i] == nil {
					if b.n != i {
						copy(b.pixels[b.n*size:(b.n+1)*size], b.pixels[i*size:(i+1)*size])
					}
					slot[i] = b.n
					b.n++
				}
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
		}
	}()

	var st embedStats
	out := make([]float32, batchSize*dim)
	lastReport := time.Now()
	for b := range batches {
		if b.n > 0 {
			if err := m.Embed(b.pixels[:b.n*size], b.n, out[:b.n*dim]); err != nil {
				return st, err
			}
		}
		row := 0
		for i, path := range b.files {
			if b.errs[i] != nil {
				st.failed++
				if err := sink.fail(path, b.errs[i]); err != nil {
					return st, err
				}
				continue
			}
			if err := sink.vector(path, out[row*dim:(row+1)*dim]); err != nil {
				return st, err
			}
			row++
			st.ok++
		}
		if time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			done := st.ok + st.failed
			fmt.Fprintf(progress, "embed: %d/%d files (%.1f img/s)\n", done, len(files), float64(done)/time.Since(start).Seconds())
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
	}
	st.elapsed = time.Since(start)
	return st, ctx.Err()
}

func prepFile(path string, dec *imageprep.Decoder, pp *imageprep.Preprocessor, dst []float32) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	data, err := readLimited(f)
	f.Close()
	if err != nil {
		return err
	}
	img, _, err := dec.Decode(data)
	if err != nil {
		return err
	}
	return pp.Run(img, dst)
}

// sink writes results in one output format.
type sink interface {
	vector(file string, v []float32) error
	fail(file string, err error) error
	close() error
}

func newSink(format string, w io.Writer, outPath string, spec embed.Spec) (sink, error) {
	if format == "jsonl" {
		return &jsonlSink{w: bufio.NewWriter(w), spec: spec}, nil
	}
	files, err := os.Create(outPath + ".files.txt")
	if err != nil {
		return nil, err
	}
	ws, ok := w.(io.WriteSeeker)
	if !ok {
		return nil, errors.New("npy output must be a file")
	}
	s := &npySink{w: ws, buf: bufio.NewWriter(ws), files: files, dim: spec.Dim}
	// Reserve the header; its row count is written at close.
	if _, err := s.buf.Write(npyHeader(0, spec.Dim)); err != nil {
		return nil, err
	}
	return s, nil
}

type jsonlSink struct {
	w    *bufio.Writer
	spec embed.Spec
}

func (s *jsonlSink) vector(file string, v []float32) error {
	b := make([]byte, 0, 64+len(v)*12)
	b = append(b, `{"file":`...)
	fb, _ := json.Marshal(file)
	b = append(b, fb...)
	b = append(b, `,"model":`...)
	b = strconv.AppendQuote(b, s.spec.Name)
	b = append(b, `,"version":`...)
	b = strconv.AppendQuote(b, s.spec.Version)
	b = append(b, `,"embedding":[`...)
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(x), 'g', -1, 32)
	}
	b = append(b, "]}\n"...)
	_, err := s.w.Write(b)
	return err
}

func (s *jsonlSink) fail(file string, err error) error {
	b, _ := json.Marshal(struct {
		File  string `json:"file"`
		Error string `json:"error"`
	}{file, err.Error()})
	_, werr := s.w.Write(append(b, '\n'))
	return werr
}

func (s *jsonlSink) close() error { return s.w.Flush() }

type npySink struct {
	w     io.WriteSeeker
	buf   *bufio.Writer
	files *os.File
	dim   int
	rows  int
}

func (s *npySink) vector(file string, v []float32) error {
	var b [4]byte
	for _, x := range v {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
		if _, err := s.buf.Write(b[:]); err != nil {
			return err
		}
	}
	s.rows++
	_, err := fmt.Fprintln(s.files, file)
	return err
}

func (s *npySink) fail(file string, err error) error {
	fmt.Fprintf(os.Stderr, "embed: %s: %v\n", file, err)
	return nil
}

func (s *npySink) close() error {
	if err := s.buf.Flush(); err != nil {
		return err
	}
	if _, err := s.w.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := s.w.Write(npyHeader(s.rows, s.dim)); err != nil {
		return err
	}
	return s.files.Close()
}

// npyHeader is a NumPy .npy v1.0 header for a little-endian float32 matrix,
// padded to a fixed 128 bytes so that it can be rewritten in place.
func npyHeader(rows, dim int) []byte {
	dict := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, dim)
	const total = 128
	h := make([]byte, 0, total)
	h = append(h, "\x93NUMPY\x01\x00"...)
	hl := total - 10
	h = append(h, byte(hl), byte(hl>>8))
	h = append(h, dict...)
	for len(h) < total-1 {
		h = append(h, ' ')
	}
	return append(h, '\n')
}

// decodeLimits are the --max-object-mib, --max-pixels, --max-jpeg-scans and
// --max-decode-time of the command running, set once before it runs.
var decodeLimits = imageprep.Limits{}.WithDefaults()

func imageprepLimits() imageprep.Limits { return decodeLimits }

func readLimited(r io.Reader) ([]byte, error) {
	return imageprep.ReadLimited(r, decodeLimits.MaxBytes)
}
