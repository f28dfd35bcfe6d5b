// Command embedfleet turns images in object storage into searchable vectors.
// This package parses flags and the environment into each package's options
// and wires the subcommands; the work lives in the other packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/embedfleet/embedfleet/shared/escape"
)

func main() {
	// SIGINT and SIGTERM cancel the context; every subcommand stops its work
	// and returns when it is cancelled.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		// An error may quote what came from outside (a key, a file name):
		// nothing in it reaches the terminal as a control sequence.
		fmt.Fprintln(os.Stderr, "embedfleet:", escape.Text(err.Error()))
		var e exitError
		if errors.As(err, &e) {
			os.Exit(e.code)
		}
		os.Exit(1)
	}
}
