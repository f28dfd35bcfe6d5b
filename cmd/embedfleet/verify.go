package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

func newVerifyCmd(g *globalFlags) *cobra.Command {
	var (
		nf             natsFlags
		mf             milvusFlags
		sf             s3Flags
		source, models string
		repair, asJSON bool
		timeout        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify --source URI --models MODEL[,MODEL...] [--repair]",
		Short: "Check a source against Milvus: every object stored, current, and nothing left of deleted ones",
		Long: `List the source and check, for each model, that every object has a row with its
current ETag written by the model's current version (from --models-dir, else
the collection's), and that no rows remain for objects no longer listed.

Prints per model: listed, ok, missing, stale and extra rows, with examples.
Exits 0 when everything is in place, 2 when something is not. --repair then
publishes a run for the missing and stale objects (workers must be running),
waits for it, deletes the extra rows, and verifies again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms := splitList(models)
			if source == "" || len(ms) == 0 {
				return errors.New("--source and --models are required")
			}
			ctx, cancel := withTimeout(cmd.Context(), timeout)
			defer cancel()
			src, err := sf.open(source)
			if err != nil {
				return err
			}
			store, err := vecstore.Connect(ctx, mf.cfg)
			if err != nil {
				return err
			}
			defer store.Close(context.Background())
			vcfg := coordinator.VerifyConfig{Source: src, Models: ms, Store: store, Versions: modelVersions(g, ms)}
			rep, err := coordinator.Verify(ctx, vcfg)
			if err != nil {
				return err
			}
			printVerify(cmd, rep, asJSON)
			if rep.Clean() {
				return nil
			}
			if !repair {
				return exitError{exitFailures, errors.New("the index does not match the source (run with --repair to fix it)")}
			}
			if len(rep.ToEmbed) > 0 {
				nc, js, topo, err := nf.connect(ctx, "embedfleet-verify", bus.StreamOptions{})
				if err != nil {
					return err
				}
				defer nc.Close()
				journal, err := coordinator.NewJournal()
				if err != nil {
					return err
				}
				defer journal.Close()
				rec, err := coordinator.Run(ctx, coordinator.Config{JS: js, Topology: topo, Source: coordinator.Only(src, rep.ToEmbed),
					Models: ms, Journal: journal})
				if errors.Is(err, bus.ErrLeaseHeld) {
					return exitError{exitLeaseHeld, err}
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "repair run %s: %d objects to embed\n", rec.ID, rec.Listed)
				sum, err := coordinator.WaitWith(ctx, js, topo, rec, coordinator.WaitOptions{Journal: journal})
				printSummary(cmd.OutOrStdout(), sum)
				if err != nil {
					return err
				}
			}
			for m, uris := range rep.ExtraURIs {
				if err := store.DeleteObjects(ctx, m, uris); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %d rows of vanished objects from %s\n", len(uris), m)
			}
			rep, err = coordinator.Verify(ctx, vcfg)
			if err != nil {
				return err
			}
			printVerify(cmd, rep, asJSON)
			if !rep.Clean() {
				return exitError{exitFailures, errors.New("still not clean after the repair (see the failures above)")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	nf.bind(f)
	mf.bind(f)
	sf.bind(f)
	f.StringVar(&source, "source", "", "s3://bucket/prefix or a folder (required)")
	f.StringVar(&models, "models", envOr("EMBEDFLEET_MODELS", ""), "models to check, comma-separated (env EMBEDFLEET_MODELS; required)")
	f.BoolVar(&repair, "repair", false, "re-embed what is missing or stale and delete extra rows")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	return cmd
}

func printVerify(cmd *cobra.Command, rep coordinator.VerifyReport, asJSON bool) {
	out := cmd.OutOrStdout()
	if asJSON {
		_ = json.NewEncoder(out).Encode(rep)
		return
	}
	for _, m := range rep.Models {
		fmt.Fprintf(out, "verify %s: listed=%d ok=%d missing=%d stale=%d extra=%d\n", m.Model, m.Listed, m.OK, m.Missing, m.Stale, m.Extra)
		for _, s := range m.Samples {
			fmt.Fprintf(out, "  %s\n", s)
		}
	}
}
