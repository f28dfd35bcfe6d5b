package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
)

// modelOptions is how every command runs its models.
func modelOptions(g *globalFlags) (embed.Options, error) {
	provider, id, err := parseDevice(g.device)
	if err != nil {
		return embed.Options{}, err
	}
	lib := embed.LibraryPath(g.ortLib)
	if provider == embed.ProviderCUDA {
		lib = embed.GPULibraryPath(g.ortGPULib)
	}
	if _, err := embed.Init(lib); err != nil {
		if provider == embed.ProviderCUDA {
			return embed.Options{}, fmt.Errorf("--device %s: %w (deploy/install/deps.sh gpu installs ONNX Runtime's GPU build %s; or pass --ort-gpu-lib)", g.device, err, embed.ORTGPUVersion)
		}
		return embed.Options{}, err
	}
	return embed.Options{IntraOpThreads: g.threads, Provider: provider, DeviceID: id, TokenizerDir: g.tokDir}, nil
}

// openModel loads ONNX Runtime and opens image model ref (a name in the
// models folder or a folder path).
func openModel(g *globalFlags, ref string) (*embed.Model, error) {
	opts, err := modelOptions(g)
	if err != nil {
		return nil, err
	}
	dir, err := embed.Resolve(g.modelsDir, ref)
	if err != nil {
		return nil, err
	}
	return embed.Open(dir, opts)
}

// openTextModel opens text model ref.
func openTextModel(g *globalFlags, ref string) (*embed.TextModel, error) {
	opts, err := modelOptions(g)
	if err != nil {
		return nil, err
	}
	dir, err := embed.Resolve(g.modelsDir, ref)
	if err != nil {
		return nil, err
	}
	return embed.OpenText(dir, opts)
}

// openedModels are the opened models of a command.
type openedModels struct {
	images []engine.ImageEncoder
	texts  []engine.TextEncoder
	closer []func() error
}

func (ms *openedModels) close() {
	for _, c := range ms.closer {
		_ = c()
	}
}

// addImage opens image model ref into ms.
func (ms *openedModels) addImage(g *globalFlags, ref string) (*embed.Model, error) {
	m, err := openModel(g, ref)
	if err != nil {
		return nil, err
	}
	ms.images, ms.closer = append(ms.images, m), append(ms.closer, m.Close)
	return m, nil
}

// addText opens text model ref into ms.
func (ms *openedModels) addText(g *globalFlags, ref string) (*embed.TextModel, error) {
	m, err := openTextModel(g, ref)
	if err != nil {
		return nil, err
	}
	ms.texts, ms.closer = append(ms.texts, m), append(ms.closer, m.Close)
	return m, nil
}

// openModels opens every named model, image or text by its spec; close
// them with close.
func openModels(g *globalFlags, names []string) (*openedModels, error) {
	ms := &openedModels{}
	for _, name := range names {
		spec, err := resolveSpec(g, name)
		if err != nil {
			ms.close()
			return nil, err
		}
		if spec.IsText() {
			_, err = ms.addText(g, name)
		} else {
			_, err = ms.addImage(g, name)
		}
		if err != nil {
			ms.close()
			return nil, err
		}
	}
	return ms, nil
}

// openModelList opens the comma-separated models of a --models flag.
func openModelList(g *globalFlags, list string) (*openedModels, error) {
	names := splitList(list)
	if len(names) == 0 {
		return nil, errors.New("--models is required")
	}
	return openModels(g, names)
}

// imagesOnly refuses text models where only image models can serve (the
// worker indexes images).
func (ms *openedModels) imagesOnly(what string) error {
	if len(ms.texts) > 0 {
		return fmt.Errorf("%s takes image models; %s is a text model (it searches an image model's collection: give it to serve or query)",
			what, ms.texts[0].Spec().Name)
	}
	return nil
}

// newEngine starts the engine over ms with the command's decoding
// settings; batch is the most inputs per inference call (0: the default).
func newEngine(g *globalFlags, ms *openedModels, batch int) (*engine.Engine, error) {
	return engine.New(engine.Options{Batch: engine.BatchConfig{MaxBatch: batch}, Limits: imageprepLimits(), FastDecode: g.fastDecode(),
		DecoderOptions: g.decoderOptions()}, ms.images, ms.texts)
}

func newModelsCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "List, fetch and verify the ONNX models; list, activate, roll back and retire their versions",
		Long: `Each model lives in its own folder under --models-dir: spec.json (name,
version = sha256 of the ONNX file, tensor names, pooling, dimension,
preprocessing) beside model.onnx. Built-in specs: clip-vit-b32, dinov2-base.

A new version of a model (new weights, same name) is indexed into a collection
of its own while the current one goes on answering queries; versions,
activate, rollback and retire manage the switch (docs/operations.md, "Upgrading
a model").`,
	}
	cmd.AddCommand(newModelsListCmd(g), newModelsPullCmd(g), newModelsVerifyCmd(g), newModelsSyncCmd(g))
	cmd.AddCommand(newModelsVersionCmds(g)...)
	return cmd
}

func newModelsListCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the built-in model specs and the models installed in --models-dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			installed, err := embed.List(g.modelsDir)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "NAME\tDIM\tOUTPUT\tVERSION\tFOLDER\n")
			have := map[string]bool{}
			for _, m := range installed {
				if m.Err != nil {
					fmt.Fprintf(w, "?\t\t\t\t%s (%v)\n", m.Dir, m.Err)
					continue
				}
				have[m.Spec.Name] = true
				kind := m.Spec.Output
				if m.Spec.OutputKind == embed.OutputTokens {
					kind += " (" + m.Spec.Pooling + " pool)"
				}
				if m.Spec.IsText() && m.Spec.PairsWith != nil {
					kind += " (text, pairs with " + m.Spec.PairsWith.Name + ")"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", m.Spec.Name, m.Spec.Dim, kind, short(m.Spec.Version), m.Dir)
			}
			for _, name := range embed.BuiltinNames() {
				if !have[name] {
					s, _ := embed.Builtin(name)
					fmt.Fprintf(w, "%s\t%d\t%s\tnot installed\t(built-in spec; `embedfleet models pull`)\n", name, s.Dim, s.Output)
				}
			}
			return w.Flush()
		},
	}
}

func short(version string) string {
	if len(version) > len("sha256:")+12 {
		return version[:len("sha256:")+12]
	}
	return version
}

func newModelsVerifyCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "verify [MODEL...]",
		Short: "Re-hash each model's ONNX file against its spec and check its tensors (all models when none is named)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := embed.Init(embed.LibraryPath(g.ortLib)); err != nil {
				return err
			}
			var dirs []string
			if len(args) == 0 {
				installed, err := embed.List(g.modelsDir)
				if err != nil {
					return err
				}
				for _, m := range installed {
					dirs = append(dirs, m.Dir)
				}
				if len(dirs) == 0 {
					return fmt.Errorf("no models in %s", g.modelsDir)
				}
			}
			for _, a := range args {
				d, err := embed.Resolve(g.modelsDir, a)
				if err != nil {
					return err
				}
				dirs = append(dirs, d)
			}
			failed := 0
			for _, d := range dirs {
				spec, err := embed.Verify(d)
				if err != nil {
					failed++
					fmt.Fprintf(cmd.OutOrStdout(), "FAIL %s: %v\n", d, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "ok   %s %s %s\n", spec.Name, short(spec.Version), d)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d models failed verification", failed, len(dirs))
			}
			return nil
		},
	}
}

func newModelsPullCmd(g *globalFlags) *cobra.Command {
	var o embed.PullOptions
	cmd := &cobra.Command{
		Use:   "pull --model clip-vit-b32|clip-vit-b32-text|dinov2-base --repo REPO --revision COMMIT --file PATH",
		Short: "Download an ONNX export from a Hugging Face-style hub into --models-dir, pinned and checksummed",
		Long: `Download one ONNX file from {endpoint}/{repo}/resolve/{revision}/{file} into
--models-dir/<name>/model.onnx, record its sha256 as the model's version in
spec.json (with the built-in spec of --model and the source), and check that its
tensors match the spec before keeping it. Pin --revision to a commit: branches
move. --sha256 makes the download fail unless the file has that digest.

A text model (clip-vit-b32-text) also fetches the repository's vocab.json and
merges.txt (from --tokenizer-path, default the root) and records their sha256,
and records the version of the installed image model it pairs with
(--pairs-with, default clip-vit-b32): pull the image tower first, from the same
repository and revision, so that the two are one checkpoint's.

Examples (a community export of CLIP's towers, image_embeds and text_embeds):
  embedfleet models pull --model clip-vit-b32 --repo Xenova/clip-vit-base-patch32 \
    --revision <commit> --file onnx/vision_model.onnx
  embedfleet models pull --model clip-vit-b32-text --repo Xenova/clip-vit-base-patch32 \
    --revision <commit> --file onnx/text_model.onnx

Or export one yourself: deploy/export/export.py --model clip-vit-b32 --hf-repo
openai/clip-vit-base-patch32 --revision <commit> --out DIR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := embed.Init(embed.LibraryPath(g.ortLib)); err != nil {
				return err
			}
			o.Token = os.Getenv("HF_TOKEN")
			last := time.Now()
			o.Progress = func(done, total int64) {
				if time.Since(last) < 2*time.Second && done != total {
					return
				}
				last = time.Now()
				if total > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "pull: %d/%d MB (%.0f%%)\n", done>>20, total>>20, 100*float64(done)/float64(total))
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "pull: %d MB\n", done>>20)
				}
			}
			spec, err := embed.Pull(cmd.Context(), g.modelsDir, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %s %s into %s\n", spec.Name, spec.Version, strings.TrimSuffix(g.modelsDir, "/")+"/"+spec.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "built-in spec the file follows: clip-vit-b32, clip-vit-b32-text or dinov2-base (required)")
	f.StringVar(&o.PairsWith, "pairs-with", "", "text models: the installed image model it pairs with (default the built-in spec's)")
	f.StringVar(&o.TokenizerDir, "tokenizer-path", "", "text models: folder of vocab.json and merges.txt in the repository (default its root)")
	f.StringVar(&o.Repo, "repo", "", "hub repository, e.g. Xenova/clip-vit-base-patch32 (required)")
	f.StringVar(&o.Revision, "revision", "", "commit to pin (required)")
	f.StringVar(&o.File, "file", "", "path of the ONNX file in the repository (required)")
	f.StringVar(&o.Name, "name", "", "model name (folder and Milvus collection); default --model")
	f.StringVar(&o.SHA256, "sha256", "", "expected sha256 of the file")
	f.StringVar(&o.Input, "input", "", "input tensor name, if not the built-in spec's (pixel_values, input_ids)")
	f.StringVar(&o.Output, "output", "", "output tensor name, if not the built-in spec's")
	f.IntVar(&o.Dim, "dim", 0, "embedding dimension, if not the built-in spec's (e.g. 384 for dinov2-small)")
	f.StringVar(&o.Endpoint, "endpoint", envOr("HF_ENDPOINT", "https://huggingface.co"), "hub base URL (env HF_ENDPOINT); token from env HF_TOKEN")
	maxMB := f.Int64("max-mb", embed.DefaultPullMaxBytes>>20, "largest file to download, in MiB (a larger one fails and nothing is kept)")
	f.DurationVar(&o.IdleTimeout, "idle-timeout", embed.DefaultPullIdleTimeout, "fail a download when no byte arrives for this long")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if *maxMB <= 0 || o.IdleTimeout <= 0 {
			return fmt.Errorf("--max-mb and --idle-timeout must be positive (got %d and %s)", *maxMB, o.IdleTimeout)
		}
		o.MaxBytes = *maxMB << 20
		return nil
	}
	for _, name := range []string{"model", "repo", "revision", "file"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newModelsSyncCmd(g *globalFlags) *cobra.Command {
	var sf s3Flags
	var from string
	var maxMB int64
	cmd := &cobra.Command{
		Use:   "sync --from s3://bucket/models/",
		Short: "Copy models from S3 (or a folder) into --models-dir, checking every file's sha256 against its spec",
		Long: `Copy every model under --from (a folder per model with spec.json and its ONNX
file, as in a models folder) into --models-dir. Each ONNX file must match the
sha256 in its spec.json before it replaces anything; models already present at
the same version are skipped. Used as the init step of worker pods.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return errors.New("--from is required")
			}
			sf.include, sf.exclude = embed.SyncFilter.Include, nil
			src, err := sf.open(from)
			if err != nil {
				return err
			}
			specs, err := embed.Sync(cmd.Context(), src, g.modelsDir, maxMB<<20)
			for _, s := range specs {
				fmt.Fprintf(cmd.OutOrStdout(), "ok   %s %s\n", s.Name, short(s.Version))
			}
			return err
		},
	}
	sf.bind(cmd.Flags())
	cmd.Flags().StringVar(&from, "from", os.Getenv("EMBEDFLEET_MODELS_FROM"), "where the models are: s3://bucket/prefix or a folder (env EMBEDFLEET_MODELS_FROM)")
	cmd.Flags().Int64Var(&maxMB, "max-mb", 4096, "largest ONNX file to accept, in MiB")
	return cmd
}
