package main

import (
	"os"

	"github.com/spf13/cobra"
)

// globalFlags are the settings every subcommand shares.
type globalFlags struct {
	ortLib string // path of the ONNX Runtime shared library
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
		"path of the ONNX Runtime shared library (env EMBEDFLEET_ORT_LIB; default: next to the binary, then ~/.cache/embedfleet where `make deps` installs it)")
	root.AddCommand(newVersionCmd(g))
	return root
}
