package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
)

// The commands of blue/green model upgrades: list a model's versions,
// switch the active one once verify says it is complete, roll back, and
// retire old collections.

type versionsConfig struct {
	g              *globalFlags
	stdout, stderr io.Writer
	nf             natsFlags
	mf             milvusFlags
	sf             s3Flags
	model, version string
	set            string
	source         string
	force, asJSON  bool
	keep           int
	timeout        time.Duration
}

func (c *versionsConfig) target() (string, error) {
	if c.model == "" {
		return "", errors.New("--model is required")
	}
	// One model by any of its spellings: its name, its collection's, or a
	// version's collection (which names the version as well).
	model, version := vecstore.ParseModelRef(c.model)
	if version != "" {
		if c.version != "" && c.version != c.model && vecstore.VersionTag(c.version) != version && !strings.HasPrefix(version, vecstore.VersionTag(c.version)) {
			return "", fmt.Errorf("--model %s names version %s, --version %s another", escape.Value(c.model), version, escape.Value(c.version))
		}
		if c.version == "" {
			c.version = c.model
		}
		c.model = model
	}
	if c.set != "" && c.set != vecstore.SetBackground {
		return "", fmt.Errorf("--set %q: the one set is %s", c.set, vecstore.SetBackground)
	}
	return vecstore.Target(c.model, c.set), nil
}

func newModelsVersionCmds(g *globalFlags) []*cobra.Command {
	mk := func(use, short, long string, run func(context.Context, *versionsConfig, *vecstore.Store, string) error, bind func(*versionsConfig, *cobra.Command)) *cobra.Command {
		cfg := &versionsConfig{g: g}
		cmd := &cobra.Command{Use: use, Short: short, Long: long, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
				target, err := cfg.target()
				if err != nil {
					return err
				}
				ctx, cancel := withTimeout(cmd.Context(), cfg.timeout)
				defer cancel()
				store, err := vecstore.Connect(ctx, cfg.mf.cfg)
				if err != nil {
					return err
				}
				defer store.Close(context.Background())
				return run(ctx, cfg, store, target)
			}}
		f := cmd.Flags()
		cfg.mf.bind(f)
		f.StringVar(&cfg.model, "model", "", "the model (required)")
		f.StringVar(&cfg.set, "set", "", "a set of the model's vectors instead of its collection: background")
		f.DurationVar(&cfg.timeout, "timeout", 0, "give up after this long (0: never)")
		if bind != nil {
			bind(cfg, cmd)
		}
		return cmd
	}
	versionFlag := func(c *versionsConfig, cmd *cobra.Command) {
		cmd.Flags().StringVar(&c.version, "version", "", "the version: at least 6 hex digits of its sha256 (as `models versions` prints; required)")
	}
	versions := mk("versions --model MODEL", "List a model's versions: collection, rows, which one is active",
		`Every version of a model that workers have written has a collection: the first
version the one named after the model, each later one a collection named after
its version. One of them is active: it answers query, serve and dedup. The
previous one is what `+"`models rollback`"+` returns to.`,
		runVersions, func(c *versionsConfig, cmd *cobra.Command) {
			cmd.Flags().BoolVar(&c.asJSON, "json", false, "print JSON")
		})
	activate := mk("activate --model MODEL --version V --source URI", "Switch queries to a model version once verify says its collection is complete",
		`Verify the version's collection against --source (every object stored with its
current ETag by that version, nothing extra: what `+"`embedfleet verify`"+` checks, with
the failure records from NATS), and if it is complete make it the active one in
one write: every query path (query, serve, dedup, /v1/copies) answers from it
from then on (query servers within 2 s). The version it replaces becomes the
previous one, for `+"`models rollback`"+`.

--keep N (default 2) then retires all but N collections of the model: the
active one, the previous one, then the newest. --force skips the verification.
Exits 2 when the collection is not complete (nothing is switched).`,
		runActivate, func(c *versionsConfig, cmd *cobra.Command) {
			versionFlag(c, cmd)
			f := cmd.Flags()
			c.nf.bind(f)
			c.sf.bind(f)
			f.StringVar(&c.source, "source", "", "the source the collection must match: s3://bucket/prefix or a folder (required unless --force)")
			f.BoolVar(&c.force, "force", false, "activate without verifying")
			f.IntVar(&c.keep, "keep", 2, "collections of the model to keep after switching (the active and previous first; 0 keeps all)")
		})
	rollback := mk("rollback --model MODEL", "Make the previous version active again",
		`Switch queries back to the version that was active before the last switch, in
one write. A second rollback undoes the first. The collection must still
exist (not retired).`,
		runRollback, nil)
	retire := mk("retire --model MODEL --version V", "Drop the collection of a version that is not active",
		`Drop one version's collection and its vectors, and forget the manifests that
version recorded (so that an incremental run for it embeds everything again).
The active version cannot be retired, by any spelling of the model (its name,
its collection's name, or a version's collection as `+"`models versions`"+` prints
it); retiring the previous one leaves nothing to roll back to. Needs NATS (for
the manifests) and Milvus.`,
		runRetire, func(c *versionsConfig, cmd *cobra.Command) {
			versionFlag(c, cmd)
			c.nf.bind(cmd.Flags())
		})
	return []*cobra.Command{versions, activate, rollback, retire}
}

func runVersions(ctx context.Context, cfg *versionsConfig, store *vecstore.Store, target string) error {
	vs, err := store.Versions(ctx, target)
	if err != nil {
		return err
	}
	if cfg.asJSON {
		return json.NewEncoder(cfg.stdout).Encode(vs)
	}
	if len(vs) == 0 {
		fmt.Fprintf(cfg.stdout, "%s has no collection yet\n", target)
		return nil
	}
	tw := tabwriter.NewWriter(cfg.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tCOLLECTION\tROWS\tSTATE")
	for _, v := range vs {
		state := ""
		switch {
		case v.Active:
			state = "active"
		case v.Previous:
			state = "previous"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", vecstore.VersionTag(v.Version), v.Collection, v.Rows, state)
	}
	return tw.Flush()
}

func runActivate(ctx context.Context, cfg *versionsConfig, store *vecstore.Store, target string) error {
	if cfg.version == "" {
		return errors.New("--version is required (`embedfleet models versions --model " + cfg.model + "` lists them)")
	}
	if cfg.source == "" && !cfg.force {
		return errors.New("--source is required: the collection is verified against it before it answers queries (or --force)")
	}
	vi, err := store.FindVersion(ctx, target, cfg.version)
	if err != nil {
		return err
	}
	var src objstore.Source
	var failures jetstream.KeyValue
	// NATS always: verify reads the failure records, and retiring old
	// versions (--keep) forgets their manifests.
	nc, js, topo, err := cfg.nf.connect(ctx, "embedfleet-activate", bus.StreamOptions{})
	if err != nil {
		return err
	}
	defer nc.Close()
	if !cfg.force {
		if src, err = cfg.sf.open(cfg.source); err != nil {
			return err
		}
		if failures, err = js.KeyValue(ctx, topo.FailuresBucket()); err != nil {
			return fmt.Errorf("failures bucket %s: %w", topo.FailuresBucket(), err)
		}
	}
	return activateVerified(ctx, cfg.stdout, store, src, failures, retirer{js, topo}, target, vi, cfg.keep)
}

// retirer retires versions of a model: its manifests first, then its
// collection, so that nothing is left that says its objects are stored.
type retirer struct {
	js   jetstream.JetStream
	topo bus.Topology
}

// retire drops version v of target, which must not be the active one by
// any spelling (vecstore.Store.Retire checks), after forgetting the
// manifests that version recorded (coordinator.ForgetVersion).
func (rt retirer) retire(ctx context.Context, store *vecstore.Store, target string, v vecstore.VersionInfo) error {
	if err := store.CheckRetire(ctx, target, v); err != nil {
		return err
	}
	if _, err := coordinator.ForgetVersion(ctx, rt.js, rt.topo, target, v.Version); err != nil {
		return fmt.Errorf("retire %s version %s: forgetting its manifests: %w (nothing dropped)", target, vecstore.VersionTag(v.Version), err)
	}
	return store.Retire(ctx, target, v)
}

// activateVerified makes version vi of target active once its collection
// matches src (src nil: without checking), then retires all but keep of
// target's collections (0: none). It is what `models activate` and
// `coordinator run --incremental --activate` share.
func activateVerified(ctx context.Context, out io.Writer, store *vecstore.Store, src objstore.Source, failures jetstream.KeyValue,
	rt retirer, target string, vi vecstore.VersionInfo, keep int) error {
	if src != nil {
		rep, err := coordinator.Verify(ctx, coordinator.VerifyConfig{Source: src, Models: []string{target}, Store: store,
			Versions: map[string]string{target: vi.Version}, Failures: failures})
		if err != nil {
			return err
		}
		printVerify(out, rep, false)
		if !rep.Clean() {
			m := rep.Models[0]
			return exitError{exitFailures, fmt.Errorf("version %s of %s is not complete in %s (missing %d, stale %d, extra %d): nothing switched; "+
				"finish its run (coordinator run --incremental with that version's models, or verify --repair), or pass --force",
				vecstore.VersionTag(vi.Version), target, vi.Collection, m.Missing, m.Stale, m.Extra)}
		}
	}
	col, err := store.OpenVersion(ctx, target, vi.Version)
	if err != nil {
		return err
	}
	rec, err := store.Activate(ctx, target, col)
	if err != nil {
		return err
	}
	prev := "none"
	if rec.Previous != nil {
		prev = vecstore.VersionTag(rec.Previous.Version) + " in " + rec.Previous.Collection
	}
	fmt.Fprintf(out, "activated %s version %s (%s); previous: %s\n", target, vecstore.VersionTag(rec.Version), rec.Collection, prev)
	if keep <= 0 {
		return nil
	}
	vs, err := store.Versions(ctx, target)
	if err != nil {
		return err
	}
	// Keep the active, then the previous, then the newest.
	rank := func(v vecstore.VersionInfo) int {
		switch {
		case v.Active:
			return 0
		case v.Previous:
			return 1
		}
		return 2
	}
	sort.SliceStable(vs, func(i, j int) bool {
		if rank(vs[i]) != rank(vs[j]) {
			return rank(vs[i]) < rank(vs[j])
		}
		return vs[i].Order > vs[j].Order
	})
	for _, v := range vs[min(keep, len(vs)):] {
		if err := rt.retire(ctx, store, target, v); err != nil {
			return err
		}
		fmt.Fprintf(out, "retired %s version %s (%s, %d rows; --keep %d)\n", target, vecstore.VersionTag(v.Version), v.Collection, v.Rows, keep)
	}
	return nil
}

func runRollback(ctx context.Context, cfg *versionsConfig, store *vecstore.Store, target string) error {
	rec, err := store.Rollback(ctx, target)
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.stdout, "rolled %s back to version %s (%s); previous: %s\n", target, vecstore.VersionTag(rec.Version), rec.Collection,
		vecstore.VersionTag(rec.Previous.Version))
	return nil
}

func runRetire(ctx context.Context, cfg *versionsConfig, store *vecstore.Store, target string) error {
	if cfg.version == "" {
		return errors.New("--version is required (`embedfleet models versions --model " + cfg.model + "` lists them)")
	}
	vi, err := store.FindVersion(ctx, target, cfg.version)
	if err != nil {
		return err
	}
	nc, js, topo, err := cfg.nf.connect(ctx, "embedfleet-retire", bus.StreamOptions{})
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := (retirer{js, topo}).retire(ctx, store, target, vi); err != nil {
		return err
	}
	fmt.Fprintf(cfg.stdout, "retired %s version %s (%s, %d rows)\n", target, vecstore.VersionTag(vi.Version), vi.Collection, vi.Rows)
	return nil
}
