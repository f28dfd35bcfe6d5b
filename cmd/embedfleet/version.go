package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// Set at build time: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func newVersionCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit, the Go version and the ONNX Runtime it loads",
		Long: `Print embedfleet's version and commit, the Go toolchain it was built with, and
the ONNX Runtime library it loads (version and path). When the library cannot be
loaded, the last line says why; the command still succeeds, so it can be used
to diagnose an installation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "embedfleet   %s\n", version)
			fmt.Fprintf(out, "commit       %s\n", commit)
			fmt.Fprintf(out, "go           %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			path := embed.LibraryPath(g.ortLib)
			if v, err := embed.Init(path); err != nil {
				fmt.Fprintf(out, "onnxruntime  not loaded: %v\n", err)
			} else {
				fmt.Fprintf(out, "onnxruntime  %s (%s)\n", v, path)
			}
			return nil
		},
	}
}
