package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/embed"
)

// similarityConfig is the flags of the command, and where it writes.
type similarityConfig struct {
	g                       *globalFlags
	stdout, stderr          io.Writer
	models, text, textModel string
	textGiven               bool // --text was given, even empty
}

func newSimilarityCmd(g *globalFlags) *cobra.Command {
	cfg := &similarityConfig{g: g}
	cmd := &cobra.Command{
		Use:   "similarity --model MODEL[,MODEL...] (IMAGE_A IMAGE_B | --text TEXT IMAGE)",
		Short: "Print how similar two images (or a text and an image) are: the article's score (cos+1)/2 and the cosine",
		Long: `Embed two image files with each model and print the article's similarity
score (cos+1)/2, between 0 and 1, and the raw cosine of the two embeddings.

With --text, compare a text with one image: the image by --model, the text by
the text tower that pairs with it (clip-vit-b32-text for clip-vit-b32, or
--text-model). Only a CLIP-style model has one.

The article reads images with Pillow's Image.open, which ignores EXIF
orientation; embedfleet turns images upright by default. --no-exif-orientation
reads them as the article does.

Examples:
  embedfleet similarity --model clip-vit-b32,dinov2-base img1.jpg img2.jpg
  embedfleet similarity --model clip-vit-b32 --text "two cats on a sofa" img1.jpg`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("text") {
				if len(args) != 1 {
					return errors.New("with --text, give exactly one image")
				}
				return nil
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			cfg.textGiven = cmd.Flags().Changed("text")
			return runSimilarity(cmd.Context(), cfg, args)
		},
	}
	cmd.Flags().StringVar(&cfg.models, "model", "", "model name(s) in --models-dir, or model folders, comma-separated (required)")
	cmd.Flags().StringVar(&cfg.text, "text", "", "compare this text with the one image given")
	cmd.Flags().StringVar(&cfg.textModel, "text-model", "", "with --text: the text model (default MODEL-text)")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

func runSimilarity(ctx context.Context, cfg *similarityConfig, args []string) error {
	g := cfg.g
	if cfg.textGiven && strings.TrimSpace(cfg.text) == "" {
		return errors.New("--text is empty: say what to compare the image with")
	}
	for _, ref := range splitList(cfg.models) {
		ms := &openedModels{}
		m, err := ms.addImage(g, ref)
		if err != nil {
			return err
		}
		tower := ""
		if cfg.textGiven {
			tm := cfg.textModel
			if tm == "" {
				tm = m.Spec().Name + "-text"
			}
			t, err := ms.addText(g, tm)
			if err != nil {
				ms.close()
				return fmt.Errorf("--text needs the text tower that pairs with %s: %w", m.Spec().Name, err)
			}
			tower = " text=" + t.Spec().Name
		}
		a, b, err := similarityPair(ctx, g, ms, args, cfg.text)
		ms.close()
		if err != nil {
			return err
		}
		cos := embed.Cosine(a, b)
		fmt.Fprintf(cfg.stdout, "%s similarity=%.6f cosine=%.6f version=%s%s\n", m.Spec().Name, (cos+1)/2, cos, short(m.Spec().Version), tower)
	}
	return nil
}

// similarityPair embeds the two things compared: two images, or with ms
// holding a text tower, the text and one image.
func similarityPair(ctx context.Context, g *globalFlags, ms *openedModels, args []string, text string) ([]float32, []float32, error) {
	eng, err := newEngine(g, ms, 0)
	if err != nil {
		return nil, nil, err
	}
	defer eng.Close()
	name := ms.images[0].Spec().Name
	vecs := make([][]float32, len(args))
	err = eng.EmbedImages(ctx, name, len(args), func(i int) ([]byte, error) { return readFileLimited(args[i]) },
		func(i int, v []float32, err error) error {
			if err != nil {
				return fmt.Errorf("%s: %w", args[i], err)
			}
			vecs[i] = v
			return nil
		})
	if err != nil {
		return nil, nil, err
	}
	if len(ms.texts) == 0 {
		return vecs[0], vecs[1], nil
	}
	tv, err := eng.EmbedText(ctx, ms.texts[0].Spec().Name, text)
	if err != nil {
		return nil, nil, fmt.Errorf("--text: %w", err)
	}
	return tv, vecs[0], nil
}
