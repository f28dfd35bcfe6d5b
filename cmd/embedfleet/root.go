package main

import (
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"
)

// globalFlags are the settings every subcommand shares.
type globalFlags struct {
	ortLib    string // path of the ONNX Runtime shared library
	modelsDir string // folder of installed models
	threads   int    // ONNX Runtime intra-op threads
	provider  string // cpu | cuda
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "embedfleet",
		Short: "Turn images in object storage into searchable vectors",
		Long: `embedfleet embeds images from S3-compatible storage with ONNX image encoders
(CLIP ViT-B/32, DINOv2-base, or any ONNX image encoder) and keeps one Milvus
collection per model, so that similar images can be searched.

Settings come from flags; each flag that has an environment variable names it
in its help, and the flag wins when both are given.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.ortLib, "ort-lib", os.Getenv("EMBEDFLEET_ORT_LIB"),
		"path of the ONNX Runtime shared library (env EMBEDFLEET_ORT_LIB; default: next to the binary, then ~/.cache/embedfleet where make deps installs it)")
	root.PersistentFlags().StringVar(&g.modelsDir, "models-dir", envOr("EMBEDFLEET_MODELS_DIR", defaultModelsDir()),
		"folder with one sub-folder per model (spec.json + model.onnx) (env EMBEDFLEET_MODELS_DIR)")
	root.PersistentFlags().IntVar(&g.threads, "threads", envInt("EMBEDFLEET_THREADS", 0),
		"ONNX Runtime threads per inference; 0 = one per core (env EMBEDFLEET_THREADS)")
	root.PersistentFlags().StringVar(&g.provider, "provider", envOr("EMBEDFLEET_PROVIDER", "cpu"),
		"execution provider: cpu, or cuda with a GPU build of ONNX Runtime (env EMBEDFLEET_PROVIDER)")
	root.AddCommand(newVersionCmd(g), newModelsCmd(g), newSimilarityCmd(g), newEmbedCmd(g),
		newCoordinatorCmd(g), newWorkerCmd(g), newQueryCmd(g), newDevCmd(g))
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

func defaultModelsDir() string {
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "embedfleet", "models")
	}
	return "models"
}
