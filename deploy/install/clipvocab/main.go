// Command clipvocab writes CLIP's vocab.json and merges.txt (Hugging Face's
// format) from the bpe_simple_vocab_16e6.txt.gz that open_clip ships. The
// deps.sh step clip-vocab runs it on the file it takes, sha256-pinned, from
// open_clip_torch's wheel.
//
//	go run ./deploy/install/clipvocab --in bpe_simple_vocab_16e6.txt.gz --out DIR
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/embedfleet/embedfleet/shared/cliptok"
)

func main() {
	in := flag.String("in", "", "bpe_simple_vocab_16e6.txt.gz")
	out := flag.String("out", "", "folder to write vocab.json and merges.txt into")
	flag.Parse()
	if *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: clipvocab --in bpe_simple_vocab_16e6.txt.gz --out DIR")
		os.Exit(2)
	}
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "clipvocab:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	vocab, merges, err := cliptok.ConvertOpenCLIPVocab(f)
	if err != nil {
		return err
	}
	if _, err := cliptok.New(vocab, merges); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "vocab.json"), vocab, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "merges.txt"), merges, 0o644)
}
