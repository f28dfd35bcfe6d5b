package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/escape"
	"github.com/embedfleet/embedfleet/shared/jobs"
)

// runStatus is one line of `embedfleet status`.
type runStatus struct {
	Run       string    `json:"run"`
	Source    string    `json:"source"`
	Models    []string  `json:"models"`
	Started   time.Time `json:"started"`
	State     string    `json:"state"` // enumerating, running, complete
	Listed    int64     `json:"listed"`
	Jobs      int64     `json:"jobs"`
	JobsDone  int64     `json:"jobs_done"`
	Embedded  int64     `json:"embedded"`
	Failed    int       `json:"failed"`
	ImgPerSec float64   `json:"img_s"`
	ETA       string    `json:"eta,omitempty"`

	Incremental bool                       `json:"incremental,omitempty"`
	Diff        map[string]jobs.DiffCounts `json:"diff,omitempty"`
}

func statusOf(rec jobs.Run, s coordinator.Summary) runStatus {
	st := runStatus{Run: rec.ID, Source: rec.Source, Models: rec.Models, Started: rec.Started, Listed: rec.Listed,
		Jobs: rec.Jobs, JobsDone: s.Done + s.Dead, Embedded: s.Stored, Failed: len(s.Failed),
		Incremental: rec.Incremental, Diff: rec.Diff}
	done := s.Stored + int64(len(s.Failed))
	switch {
	case s.Complete:
		st.State = "complete"
	case !rec.Enumerated:
		st.State = "enumerating"
	default:
		st.State = "running"
	}
	if el := time.Since(rec.Started).Seconds(); el > 0 && !s.Complete {
		st.ImgPerSec = float64(done) / el
		if st.ImgPerSec > 0 && rec.Enumerated {
			st.ETA = (time.Duration(float64(rec.Listed-done)/st.ImgPerSec) * time.Second).String()
		}
	}
	return st
}

// statusConfig is the flags of the command, and where it writes.
type statusConfig struct {
	g              *globalFlags
	stdout, stderr io.Writer
	nf             natsFlags
	asJSON         bool
	watch          bool
	limit          int
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	cfg := &statusConfig{g: g}
	cmd := &cobra.Command{
		Use:   "status [RUN]",
		Short: "Show runs: listed, embedded, failed, img/s and ETA (a live bar for one run on a terminal)",
		Long: `Without RUN: the latest --limit runs, one line each. With RUN: that run; on a
terminal it redraws a progress bar until the run completes (--watch=false
prints once). Output is JSON when stdout is not a terminal, or with --json.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return showStatus(cmd.Context(), cfg, args)
		},
	}
	cfg.nf.bind(cmd.Flags())
	cmd.Flags().BoolVar(&cfg.asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&cfg.watch, "watch", true, "with RUN on a terminal: redraw until the run completes")
	cmd.Flags().IntVar(&cfg.limit, "limit", 10, "runs to show")
	return cmd
}

func showStatus(ctx context.Context, cfg *statusConfig, args []string) error {
	cfg.nf.cfg.Name = "embedfleet-status"
	nc, js, err := bus.Connect(cfg.nf.cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	coord := coordinator.New(js, cfg.nf.topology())
	out := cfg.stdout
	tty := isTerminal(out)
	if !tty {
		cfg.asJSON = true
	}
	if len(args) == 1 {
		for {
			rec, err := coord.GetRun(ctx, args[0])
			if err != nil {
				return err
			}
			sum, err := coord.Status(ctx, rec)
			if err != nil {
				return err
			}
			st := statusOf(rec, sum)
			if cfg.asJSON {
				return json.NewEncoder(out).Encode(st)
			}
			fmt.Fprintf(out, "\r%s", progressLine(st))
			if !cfg.watch || st.State == "complete" {
				fmt.Fprintln(out)
				return nil
			}
			select {
			case <-ctx.Done():
				fmt.Fprintln(out)
				return nil
			case <-time.After(2 * time.Second):
			}
		}
	}
	runs, err := coord.Runs(ctx)
	if err != nil {
		return err
	}
	if len(runs) > cfg.limit {
		runs = runs[:cfg.limit]
	}
	var sts []runStatus
	for _, rec := range runs {
		sum, err := coord.Status(ctx, rec)
		if err != nil {
			return err
		}
		sts = append(sts, statusOf(rec, sum))
	}
	if cfg.asJSON {
		return json.NewEncoder(out).Encode(sts)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "RUN\tSTATE\tSOURCE\tMODELS\tLISTED\tEMBEDDED\tFAILED\tIMG/S\tETA\tDIFF (new/changed/deleted)")
	for _, s := range sts {
		diff := "full run"
		if s.Incremental {
			var parts []string
			for _, m := range s.Models {
				d := s.Diff[m]
				parts = append(parts, fmt.Sprintf("%s %d/%d/%d", m, d.New, d.Changed, d.Deleted))
			}
			diff = strings.Join(parts, ", ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.1f\t%s\t%s\n", s.Run, s.State, escape.Terminal(s.Source),
			strings.Join(s.Models, ","), s.Listed, s.Embedded, s.Failed, s.ImgPerSec, s.ETA, diff)
	}
	return w.Flush()
}

func progressLine(s runStatus) string {
	const width = 30
	frac := 0.0
	if s.Listed > 0 {
		frac = float64(s.Embedded+int64(s.Failed)) / float64(s.Listed)
	}
	n := int(frac * width)
	bar := strings.Repeat("#", n) + strings.Repeat(".", width-n)
	line := fmt.Sprintf("[%s] %5.1f%%  %d/%d embedded, %d failed, %.1f img/s  %s", bar, 100*frac, s.Embedded, s.Listed, s.Failed, s.ImgPerSec, s.State)
	if s.ETA != "" {
		line += "  ETA " + s.ETA
	}
	return line
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
