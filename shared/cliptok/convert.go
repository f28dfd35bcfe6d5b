package cliptok

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// OpenCLIPMerges is how many merges of bpe_simple_vocab_16e6.txt CLIP uses:
// with the 512 byte tokens and the two special ones they make its 49,408
// ids.
const OpenCLIPMerges = 49152 - 256 - 2

// ConvertOpenCLIPVocab builds vocab.json and merges.txt, in Hugging Face's
// format, from the gzipped bpe_simple_vocab_16e6.txt that OpenAI's CLIP and
// open_clip ship: the 256 byte tokens, the same with "</w>", one token per
// merge in rank order, then <|startoftext|> and <|endoftext|>, which is the
// vocabulary of openai/clip-vit-base-patch32.
func ConvertOpenCLIPVocab(gz io.Reader) (vocabJSON, mergesTxt []byte, err error) {
	zr, err := gzip.NewReader(gz)
	if err != nil {
		return nil, nil, fmt.Errorf("bpe vocabulary: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("bpe vocabulary: %w", err)
	}
	lines := strings.Split(string(raw), "\n")
	if len(lines) < OpenCLIPMerges+1 {
		return nil, nil, fmt.Errorf("bpe vocabulary: %d lines, want at least %d", len(lines), OpenCLIPMerges+1)
	}
	merges := lines[1 : OpenCLIPMerges+1] // the first line names the file
	// The byte tokens in GPT-2's order: the bytes that stand for
	// themselves, then the others.
	alphabet := make([]rune, 0, 256)
	for _, r := range byteRunes {
		if r < 256 {
			alphabet = append(alphabet, r)
		}
	}
	for _, r := range byteRunes {
		if r >= 256 {
			alphabet = append(alphabet, r)
		}
	}
	tokens := make([]string, 0, 512+len(merges)+2)
	for _, r := range alphabet {
		tokens = append(tokens, string(r))
	}
	for _, r := range alphabet {
		tokens = append(tokens, string(r)+"</w>")
	}
	var mb bytes.Buffer
	mb.WriteString("#version: 0.2\n")
	for i, m := range merges {
		a, b, ok := strings.Cut(m, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, nil, fmt.Errorf("bpe vocabulary: line %d: %q is not a pair", i+2, m)
		}
		tokens = append(tokens, a+b)
		mb.WriteString(m)
		mb.WriteByte('\n')
	}
	tokens = append(tokens, StartToken, EndToken)
	var vb bytes.Buffer
	vb.WriteByte('{')
	seen := make(map[string]bool, len(tokens))
	for id, tok := range tokens {
		if seen[tok] {
			return nil, nil, fmt.Errorf("bpe vocabulary: token %q twice", tok)
		}
		seen[tok] = true
		if id > 0 {
			vb.WriteByte(',')
		}
		k, _ := json.Marshal(tok)
		vb.Write(k)
		fmt.Fprintf(&vb, ":%d", id)
	}
	vb.WriteString("}\n")
	return vb.Bytes(), mb.Bytes(), nil
}
