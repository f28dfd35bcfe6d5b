package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/imageprep"
)

func newSimilarityCmd(g *globalFlags) *cobra.Command {
	var models string
	cmd := &cobra.Command{
		Use:   "similarity --model MODEL[,MODEL...] IMAGE_A IMAGE_B",
		Short: "Print how similar two images are: the article's score (cos+1)/2 and the cosine",
		Long: `Embed two image files with each model and print the article's similarity
score (cos+1)/2, between 0 and 1, and the raw cosine of the two embeddings.

The article reads images with Pillow's Image.open, which ignores EXIF
orientation; embedfleet turns images upright by default. --no-exif-orientation
reads them as the article does.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := g.decoderOptions()
			for _, ref := range strings.Split(models, ",") {
				m, err := openModel(g, strings.TrimSpace(ref))
				if err != nil {
					return err
				}
				vecs, err := embedPaths(m, args, opts)
				m.Close()
				if err != nil {
					return err
				}
				cos := embed.Cosine(vecs[0], vecs[1])
				fmt.Fprintf(cmd.OutOrStdout(), "%s similarity=%.6f cosine=%.6f version=%s\n", m.Spec().Name, (cos+1)/2, cos, short(m.Spec().Version))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&models, "model", "", "model name(s) in --models-dir, or model folders, comma-separated (required)")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

// embedPaths embeds image files in one batch; any unreadable image fails the
// call, naming the file.
func embedPaths(m *embed.Model, paths []string, opts []imageprep.DecoderOption) ([][]float32, error) {
	dec := imageprep.NewDecoder(imageprepLimits(), opts...)
	defer dec.Close()
	pp, err := imageprep.NewPreprocessor(m.Params())
	if err != nil {
		return nil, err
	}
	size, dim := m.InputSize(), m.Spec().Dim
	batch := make([]float32, len(paths)*size)
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		data, err := readLimited(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		img, _, err := dec.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if err := pp.Run(img, batch[i*size:(i+1)*size]); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	out := make([]float32, len(paths)*dim)
	if err := m.Embed(batch, len(paths), out); err != nil {
		return nil, err
	}
	vecs := make([][]float32, len(paths))
	for i := range vecs {
		vecs[i] = out[i*dim : (i+1)*dim]
	}
	return vecs, nil
}
