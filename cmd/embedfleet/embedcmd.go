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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/cliptok"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/httpapi"
	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/objstore"
)

// embedConfig is the flags of the command, and where it writes.
type embedConfig struct {
	g                      *globalFlags
	stdin                  io.Reader
	stdout, stderr         io.Writer
	model, format, outPath string
	textFile               string
	batchSize, workers     int
}

func newEmbedCmd(g *globalFlags) *cobra.Command {
	cfg := &embedConfig{g: g}
	cmd := &cobra.Command{
		Use:   "embed --model MODEL [--format jsonl|npy] [--out FILE] (IMAGE... | --text-file FILE)",
		Short: "Embed image files (or texts, with a text model) and write the vectors as JSON lines or a .npy matrix",
		Long: `Decode, preprocess and embed image files in batches, decoding on several
cores while the model runs. Vectors are L2-normalised.

--format jsonl (default) writes one line per file, in argument order:
  {"file":"a.jpg","model":"clip-vit-b32","version":"sha256:...","embedding":[...]}
and for a file that cannot be embedded:
  {"file":"bad.jpg","error":"corrupt image: ..."}
--format npy writes a float32 matrix [files, dim] to --out (required) and the
file of each row, one per line, to --out + ".files.txt"; failures go to stderr.

With a text model (clip-vit-b32-text), --text-file FILE (- for stdin) gives
the texts, one per line; each line is a "text" where jsonl has "file", and
the .files.txt lists the texts.

Every file (or text) is tried; the command exits with status 1 when any failed.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("text-file") {
				if len(args) > 0 {
					return errors.New("give images or --text-file, not both")
				}
				return nil
			}
			return cobra.MinimumNArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.stdin, cfg.stdout, cfg.stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runEmbed(cmd.Context(), cfg, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.model, "model", "", "model name in --models-dir, or a model folder (required)")
	f.StringVar(&cfg.format, "format", "jsonl", "jsonl or npy")
	f.StringVarP(&cfg.outPath, "out", "o", "", "output file (default stdout for jsonl)")
	f.StringVar(&cfg.textFile, "text-file", "", "with a text model: texts to embed, one per line (- for stdin)")
	f.IntVar(&cfg.batchSize, "batch", 32, "images (or texts) per inference batch")
	f.IntVar(&cfg.workers, "workers", runtime.NumCPU(), "goroutines that decode and preprocess")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

func runEmbed(ctx context.Context, cfg *embedConfig, args []string) error {
	g := cfg.g
	if cfg.format != "jsonl" && cfg.format != "npy" {
		return fmt.Errorf("--format %q: want jsonl or npy", cfg.format)
	}
	if cfg.format == "npy" && cfg.outPath == "" {
		return errors.New("--format npy needs --out FILE")
	}
	if cfg.batchSize < 1 || cfg.workers < 1 {
		return fmt.Errorf("--batch and --workers must be at least 1")
	}
	if cfg.textFile != "" {
		return embedTextFile(ctx, cfg)
	}
	m, err := openModel(g, cfg.model)
	if err != nil {
		return err
	}
	defer m.Close()
	var w io.Writer = cfg.stdout
	if cfg.outPath != "" {
		f, err := os.Create(cfg.outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	sink, err := newSink(cfg.format, w, cfg.outPath, m.Spec())
	if err != nil {
		return err
	}
	stats, err := embedFiles(ctx, g, m, args, cfg.batchSize, cfg.workers, sink, cfg.stderr)
	if err != nil {
		return err
	}
	if err := sink.close(); err != nil {
		return err
	}
	fmt.Fprintf(cfg.stderr, "embed %s: %d files, %d embedded, %d failed, %.1f img/s\n",
		m.Spec().Name, len(args), stats.ok, stats.failed, float64(stats.ok)/stats.elapsed.Seconds())
	if stats.failed > 0 {
		return fmt.Errorf("%d of %d files failed", stats.failed, len(args))
	}
	return nil
}

type embedStats struct {
	ok, failed int
	elapsed    time.Duration
}

// embedFiles embeds files through the engine (decoding on workers cores
// while the model runs batches of batchSize) and hands results to sink in
// file order.
func embedFiles(ctx context.Context, g *globalFlags, m *embed.Model, files []string, batchSize, workers int,
	sink sink, progress io.Writer) (embedStats, error) {
	start := time.Now()
	eng, err := engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: batchSize}, PrepWorkers: workers, FastDecode: g.fastDecode(),
		Limits: imageprepLimits(), DecoderOptions: g.decoderOptions()}, []engine.ImageEncoder{m}, nil)
	if err != nil {
		return embedStats{}, err
	}
	defer eng.Close()
	var st embedStats
	lastReport := time.Now()
	err = eng.EmbedImages(ctx, m.Spec().Name, len(files), func(i int) ([]byte, error) {
		return readFileLimited(files[i])
	}, func(i int, v []float32, err error) error {
		if err != nil {
			st.failed++
			if werr := sink.fail(files[i], err); werr != nil {
				return werr
			}
		} else {
			st.ok++
			if werr := sink.vector(files[i], v); werr != nil {
				return werr
			}
		}
		if time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			done := st.ok + st.failed
			fmt.Fprintf(progress, "embed: %d/%d files (%.1f img/s)\n", done, len(files), float64(done)/time.Since(start).Seconds())
		}
		return nil
	})
	st.elapsed = time.Since(start)
	return st, err
}

// Bounds of embed --text-file: the file (or stdin) as a whole, and one
// line, which is one text (CLIP reads only its first 75 tokens anyway; the
// query server takes the same length).
const (
	maxTextFileBytes = 256 << 20
	maxTextBytes     = httpapi.DefaultMaxTextBytes
)

// embedTextFile embeds the lines of path with text model ref, streaming:
// a line over maxTextBytes is a recorded failure (its rest is skipped,
// never held), and input past maxTextFileBytes is an error, not dropped.
func embedTextFile(ctx context.Context, cfg *embedConfig) error {
	g, ref, path, format, outPath, batchSize := cfg.g, cfg.model, cfg.textFile, cfg.format, cfg.outPath, cfg.batchSize
	r := cfg.stdin
	if path != "-" {
		f, err := objstore.OpenFile(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Size() > maxTextFileBytes {
			return fmt.Errorf("%s is %d MiB, over the %d MiB a text file may hold: split it", path, st.Size()>>20, maxTextFileBytes>>20)
		}
		r = f
	}
	lines := newLineReader(r, maxTextBytes, maxTextFileBytes)
	m, err := openTextModel(g, ref)
	if err != nil {
		return err
	}
	defer m.Close()
	eng, err := newEngine(g, &openedModels{texts: []engine.TextEncoder{m}}, batchSize)
	if err != nil {
		return err
	}
	defer eng.Close()
	w := cfg.stdout
	if outPath != "" {
		f, err := os.Create(outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	sk, err := newSink(format, w, outPath, m.Spec())
	if err != nil {
		return err
	}
	if js, ok := sk.(*jsonlSink); ok {
		js.key = "text"
	}
	start, failed, total := time.Now(), 0, 0
	type line struct {
		text string
		err  error // why it is not embedded
	}
	var chunk []line
	flush := func() error {
		var ok []string
		for _, l := range chunk {
			if l.err == nil {
				ok = append(ok, l.text)
			}
		}
		var vecs [][]float32
		if len(ok) > 0 {
			if vecs, err = eng.EmbedTexts(ctx, m.Spec().Name, ok); err != nil {
				return err
			}
		}
		j := 0
		for _, l := range chunk {
			if l.err != nil {
				failed++
				if err := sk.fail(escape.Clip(l.text, 64), l.err); err != nil {
					return err
				}
				continue
			}
			if err := sk.vector(l.text, vecs[j]); err != nil {
				return err
			}
			j++
		}
		chunk = chunk[:0]
		return nil
	}
	for {
		t, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		switch {
		case errors.Is(err, errLineTooLong):
			err = fmt.Errorf("%w: line %d is over the %d-byte limit of one text", cliptok.ErrInvalidText, lines.n, maxTextBytes)
		case err != nil:
			return err // the input's own trouble, or over maxTextFileBytes
		case !utf8.ValidString(t):
			err = cliptok.ErrInvalidText
		}
		chunk = append(chunk, line{t, err})
		total++
		if len(chunk) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if total == 0 {
		return fmt.Errorf("%s holds no texts", path)
	}
	if err := sk.close(); err != nil {
		return err
	}
	fmt.Fprintf(cfg.stderr, "embed %s: %d texts, %d embedded, %d failed, %.1f texts/s\n",
		m.Spec().Name, total, total-failed, failed, float64(total-failed)/time.Since(start).Seconds())
	if failed > 0 {
		return fmt.Errorf("%d of %d texts failed", failed, total)
	}
	return nil
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
	key  string // what each line names: "file" (the default) or "text"
}

func (s *jsonlSink) vector(file string, v []float32) error {
	b := make([]byte, 0, 64+len(v)*12)
	b = append(b, '{')
	b = strconv.AppendQuote(b, s.name())
	b = append(b, ':')
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

func (s *jsonlSink) name() string {
	if s.key == "" {
		return "file"
	}
	return s.key
}

func (s *jsonlSink) fail(file string, err error) error {
	k, _ := json.Marshal(s.name())
	f, _ := json.Marshal(file)
	e, _ := json.Marshal(err.Error())
	_, werr := fmt.Fprintf(s.w, "{%s:%s,\"error\":%s}\n", k, f, e)
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
	fmt.Fprintf(os.Stderr, "embed: %s: %s\n", escape.Terminal(file), escape.Terminal(err.Error()))
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

// errLineTooLong is a line over the reader's limit; the reader has skipped
// its rest.
var errLineTooLong = errors.New("line too long")

// lineReader reads lines (a trailing "\r" dropped) of at most max bytes,
// skipping the rest of a longer one, and fails once total bytes are read.
type lineReader struct {
	br         *bufio.Reader
	max, total int64
	read       int64
	n          int // lines read
}

func newLineReader(r io.Reader, max, total int64) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max, total: total}
}

func (l *lineReader) next() (string, error) {
	var buf []byte
	long := false
	for {
		frag, err := l.br.ReadSlice('\n')
		l.read += int64(len(frag))
		if l.read > l.total {
			return "", fmt.Errorf("the input is over the %d MiB a text file may hold: split it", l.total>>20)
		}
		if !long {
			buf = append(buf, frag...)     // at most the reader's buffer past max
			if int64(len(buf)) > l.max+2 { // room for "\r\n"
				long, buf = true, buf[:min(len(buf), 64)]
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(frag) == 0 && len(buf) == 0 && !long:
			return "", io.EOF
		case err != nil && !errors.Is(err, io.EOF):
			return "", err
		}
		break
	}
	l.n++
	text := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
	if long {
		return text, errLineTooLong
	}
	if int64(len(text)) > l.max {
		return text[:64], errLineTooLong
	}
	return text, nil
}
