package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// verifyConfig is the flags of the command, and where it writes.
type verifyConfig struct {
	g              *globalFlags
	stdout, stderr io.Writer
	nf             natsFlags
	mf             milvusFlags
	sf             s3Flags
	source, models string
	repair, asJSON bool
	retryFailed    bool
	timeout        time.Duration
}

func newVerifyCmd(g *globalFlags) *cobra.Command {
	cfg := &verifyConfig{g: g}
	cmd := &cobra.Command{
		Use:   "verify --source URI --models MODEL[,MODEL...] [--repair]",
		Short: "Check a source against Milvus: every object stored, current, and nothing left of deleted ones",
		Long: `List the source and check, for each model, that every object has a row with its
current ETag written by the model's current version, and that no rows remain
for objects no longer listed. The version is the one in --models-dir, and the
collection checked is that version's (active or not: an upgrade is verified
before ` + "`models activate`" + `); a model not in --models-dir is checked in its
active collection.

Prints per model: listed, ok, missing, stale, extra, failed and duplicated,
with examples.
Failed objects are those whose bytes cannot be embedded (corrupt, unsupported,
over a limit), as the workers recorded them at their current ETag: they are
not missing, and they are tried again only when the object changes (or with
--retry-failed). Extra rows are rows of objects that no longer exist (each is
checked with the store); rows of objects that exist but that the listing's
filter leaves out are counted as unlisted and kept. Duplicated objects are
stored more than once under their id (concurrent upserts of one object can
leave copies in Milvus): queries see one row, but count(*) and the
collection's size count every copy. They are looked for only when the rows
under the source's prefix outnumber the objects found.

Exits 0 when nothing is missing, stale, extra or duplicated, 2 otherwise.
--repair then writes each duplicated row back once (which leaves one copy),
publishes a run for the missing and stale objects (workers must be running),
waits for it, deletes the rows of objects still gone, and verifies again.
Reads the failure records from NATS, so it needs --nats-url even without
--repair.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return runVerify(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	cfg.nf.bind(f)
	cfg.mf.bind(f)
	cfg.sf.bind(f)
	f.StringVar(&cfg.source, "source", "", "s3://bucket/prefix or a folder (required)")
	f.StringVar(&cfg.models, "models", envOr("EMBEDFLEET_MODELS", ""), "models to check, comma-separated (env EMBEDFLEET_MODELS; required)")
	f.BoolVar(&cfg.repair, "repair", false, "re-embed what is missing or stale and delete the rows of objects that are gone")
	f.BoolVar(&cfg.retryFailed, "retry-failed", false, "count objects whose bytes failed for good (corrupt, unsupported, too large) as missing, so --repair tries them again (after raising a limit, say)")
	f.BoolVar(&cfg.asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&cfg.timeout, "timeout", 0, "give up after this long (0: never)")
	return cmd
}

func runVerify(ctx context.Context, cfg *verifyConfig) error {
	g := cfg.g
	ms := splitList(cfg.models)
	if cfg.source == "" || len(ms) == 0 {
		return errors.New("--source and --models are required")
	}
	ctx, cancel := withTimeout(ctx, cfg.timeout)
	defer cancel()
	src, err := cfg.sf.open(cfg.source)
	if err != nil {
		return err
	}
	store, err := vecstore.Connect(ctx, cfg.mf.cfg)
	if err != nil {
		return err
	}
	defer store.Close(context.Background())
	nc, js, topo, err := cfg.nf.connect(ctx, "embedfleet-verify", bus.StreamOptions{})
	if err != nil {
		return err
	}
	defer nc.Close()
	failures, err := js.KeyValue(ctx, topo.FailuresBucket())
	if err != nil {
		return fmt.Errorf("failures bucket %s: %w", topo.FailuresBucket(), err)
	}
	vcfg := coordinator.VerifyConfig{Source: src, Models: ms, Store: store, Versions: modelVersions(g, ms),
		Failures: failures, RetryFailed: cfg.retryFailed}
	rep, err := coordinator.Verify(ctx, vcfg)
	if err != nil {
		return err
	}
	printVerify(cfg.stdout, rep, cfg.asJSON)
	if rep.Clean() && !(cfg.retryFailed && cfg.repair && len(rep.ToEmbed) > 0) {
		return nil
	}
	if !cfg.repair {
		return exitError{exitFailures, errors.New("the index does not match the source (run with --repair to fix it)")}
	}
	rep, sum, err := coordinator.Repair(ctx, coordinator.RepairConfig{Verify: vcfg, JS: js, Topology: topo, Out: cfg.stdout}, rep)
	if sum.Run != "" {
		printSummary(cfg.stdout, sum)
	}
	if errors.Is(err, bus.ErrLeaseHeld) {
		return exitError{exitLeaseHeld, err}
	}
	if err != nil {
		return err
	}
	printVerify(cfg.stdout, rep, cfg.asJSON)
	if !rep.Clean() {
		return exitError{exitFailures, errors.New("still not clean after the repair (see the failures above)")}
	}
	return nil
}

func printVerify(out io.Writer, rep coordinator.VerifyReport, asJSON bool) {
	if asJSON {
		_ = json.NewEncoder(out).Encode(rep)
		return
	}
	for _, m := range rep.Models {
		fmt.Fprintf(out, "verify %s: listed=%d ok=%d missing=%d stale=%d extra=%d failed=%d duplicated=%d",
			m.Model, m.Listed, m.OK, m.Missing, m.Stale, m.Extra, m.Failed, m.Duplicated)
		if n := rep.Unlisted[m.Model]; n > 0 {
			fmt.Fprintf(out, " unlisted=%d", n)
		}
		if m.Unscanned > 0 {
			fmt.Fprintf(out, " unscanned=%d", m.Unscanned)
		}
		fmt.Fprintln(out)
		for _, s := range m.Samples {
			fmt.Fprintf(out, "  %s\n", escape.Terminal(s))
		}
	}
}
