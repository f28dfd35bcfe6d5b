package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

// globalFlags are the settings every subcommand shares.
type globalFlags struct {
	ortLib    string // path of the ONNX Runtime shared library
	ortGPULib string // the GPU build's, for --device cuda:N
	modelsDir string // folder of installed models
	threads   int    // ONNX Runtime intra-op threads
	device    string // cpu | cuda | cuda:N
	noEXIF    bool   // keep pixels as stored, ignoring EXIF orientation
	tokDir    string // where text models' tokenizer files are, when not in their folder
	decode    string // exact | fast

	// What one image may cost (docs/security.md).
	maxObjectMiB  int
	maxPixels     int64
	maxJPEGScans  int
	maxDecodeTime time.Duration
}

// limits is what every command that decodes accepts of one image.
func (g *globalFlags) limits() imageprep.Limits {
	return imageprep.Limits{MaxBytes: int64(g.maxObjectMiB) << 20, MaxPixels: g.maxPixels,
		MaxScans: g.maxJPEGScans, MaxDecodeTime: g.maxDecodeTime}.WithDefaults()
}

// fastDecode reports whether --decode fast was asked for.
func (g *globalFlags) fastDecode() bool { return g.decode == "fast" }

// decoderOptions is how every command decodes images: the worker that
// indexes and the commands that query must agree.
func (g *globalFlags) decoderOptions() []imageprep.DecoderOption {
	if g.noEXIF {
		return []imageprep.DecoderOption{imageprep.WithoutEXIFOrientation()}
	}
	return nil
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "embedfleet",
		Short: "Turn images in object storage into searchable vectors",
		Long: `embedfleet embeds images from S3-compatible storage with ONNX image encoders
(CLIP ViT-B/32, DINOv2-base, or any ONNX image encoder) and keeps one Milvus
collection per model, so that similar images can be searched: by an image,
by an indexed object, or by a text with CLIP's text tower.

Settings come from flags; each flag that has an environment variable names it
in its help, and the flag wins when both are given.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.maxObjectMiB < 1 || g.maxPixels < 1 || g.maxJPEGScans < 1 || g.maxDecodeTime <= 0 {
				return fmt.Errorf("--max-object-mib, --max-pixels, --max-jpeg-scans and --max-decode-time must be positive")
			}
			decodeLimits = g.limits()
			if g.decode != "exact" && g.decode != "fast" {
				return fmt.Errorf("--decode %q: want exact or fast", g.decode)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.ortLib, "ort-lib", os.Getenv("EMBEDFLEET_ORT_LIB"),
		"path of the ONNX Runtime shared library (env EMBEDFLEET_ORT_LIB; default: next to the binary, then ~/.cache/embedfleet where make deps installs it)")
	root.PersistentFlags().StringVar(&g.ortGPULib, "ort-gpu-lib", os.Getenv("EMBEDFLEET_ORT_GPU_LIB"),
		"with --device cuda:N: path of ONNX Runtime's GPU build (env EMBEDFLEET_ORT_GPU_LIB; default: where deploy/install/deps.sh gpu installs it); its CUDA 13 and cuDNN 9 libraries come from the loader path")
	root.PersistentFlags().StringVar(&g.modelsDir, "models-dir", envOr("EMBEDFLEET_MODELS_DIR", defaultModelsDir()),
		"folder with one sub-folder per model (spec.json + model.onnx) (env EMBEDFLEET_MODELS_DIR)")
	root.PersistentFlags().StringVar(&g.tokDir, "tokenizer-dir", os.Getenv("EMBEDFLEET_CLIP_VOCAB"),
		"folder with CLIP's vocab.json and merges.txt, for a text model whose folder lacks them (env EMBEDFLEET_CLIP_VOCAB, which deploy/install/deps.sh --env sets)")
	root.PersistentFlags().StringVar(&g.decode, "decode", envOr("EMBEDFLEET_DECODE", "exact"),
		"exact decodes every image as Pillow does (the article's pixels); fast decodes a JPEG at the smallest DCT scaling that keeps its shorter side at least the models' resize target, as Pillow's draft() does: several times faster on large photos, vectors very close (docs/operations.md); give the worker and the query side the same setting (env EMBEDFLEET_DECODE)")
	root.PersistentFlags().IntVar(&g.threads, "threads", envInt("EMBEDFLEET_THREADS", 0),
		"ONNX Runtime threads per inference; 0 = one per core (env EMBEDFLEET_THREADS)")
	root.PersistentFlags().StringVar(&g.device, "device", envOr("EMBEDFLEET_DEVICE", "cpu"),
		"where models run: cpu, or cuda:N (GPU N) with Microsoft's GPU build of ONNX Runtime (env EMBEDFLEET_DEVICE)")
	root.PersistentFlags().BoolVar(&g.noEXIF, "no-exif-orientation", os.Getenv("EMBEDFLEET_NO_EXIF_ORIENTATION") == "true",
		"keep pixels as stored, as the article's code does, instead of turning JPEG, PNG and WebP images upright by their EXIF orientation; give the worker and the query side the same setting (env EMBEDFLEET_NO_EXIF_ORIENTATION=true)")
	pf := root.PersistentFlags()
	pf.IntVar(&g.maxObjectMiB, "max-object-mib", envInt("EMBEDFLEET_MAX_OBJECT_MIB", imageprep.DefaultMaxBytes>>20),
		"largest image object read, MiB; larger ones are recorded as failed without being read (env EMBEDFLEET_MAX_OBJECT_MIB)")
	pf.Int64Var(&g.maxPixels, "max-pixels", int64(envInt("EMBEDFLEET_MAX_PIXELS", imageprep.DefaultMaxPixels)),
		"largest width*height an image header may declare, checked before decoding (env EMBEDFLEET_MAX_PIXELS)")
	pf.IntVar(&g.maxJPEGScans, "max-jpeg-scans", envInt("EMBEDFLEET_MAX_JPEG_SCANS", imageprep.DefaultMaxScans),
		"most scans a progressive JPEG may have, counted before decoding; each scan costs a pass over the image (env EMBEDFLEET_MAX_JPEG_SCANS)")
	pf.DurationVar(&g.maxDecodeTime, "max-decode-time", envDuration("EMBEDFLEET_MAX_DECODE_TIME", imageprep.DefaultMaxDecodeTime),
		"a JPEG decode still running after this long stops and the image is recorded as failed (env EMBEDFLEET_MAX_DECODE_TIME)")
	root.AddCommand(newVersionCmd(g), newModelsCmd(g), newSimilarityCmd(g), newEmbedCmd(g),
		newCoordinatorCmd(g), newWorkerCmd(g), newQueryCmd(g), newDedupCmd(g), newServeCmd(g), newDevCmd(g), newStatusCmd(g), newVerifyCmd(g), newBenchCmd(g))
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func defaultModelsDir() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "embedfleet", "models")
	}
	return "models"
}

// parseDevice turns --device into an execution provider and device id.
func parseDevice(d string) (provider string, id int, err error) {
	switch {
	case d == "" || d == "cpu":
		return "cpu", 0, nil
	case d == "cuda":
		return "cuda", 0, nil
	case strings.HasPrefix(d, "cuda:"):
		id, err := strconv.Atoi(strings.TrimPrefix(d, "cuda:"))
		if err != nil || id < 0 {
			return "", 0, fmt.Errorf("--device %q: want cpu, cuda or cuda:N", d)
		}
		return "cuda", id, nil
	}
	return "", 0, fmt.Errorf("--device %q: want cpu, cuda or cuda:N", d)
}
