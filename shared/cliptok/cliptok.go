// Package cliptok is CLIP's text tokenizer: it gives the ids that Hugging
// Face transformers' CLIPTokenizerFast gives (what AutoTokenizer and
// CLIPProcessor load for openai/clip-vit-base-patch32), padded and
// truncated to the text tower's context of 77.
//
// The steps, in CLIPTokenizerFast's order:
//
//   - normalise: Unicode NFC, every run of white space (Unicode's
//     White_Space) becomes one space, lower case;
//   - the special tokens <|startoftext|> and <|endoftext|>, where the
//     normalised text spells them, are those tokens;
//   - split the rest into pieces: the contractions 's 't 're 've 'm 'll 'd,
//     runs of letters, single digits, runs of anything else but white
//     space (white space goes);
//   - byte-level BPE on each piece: its UTF-8 bytes as GPT-2's printable
//     byte alphabet, "</w>" on the last, the vocabulary's merges in rank
//     order;
//   - <|startoftext|>, the first 75 ids, <|endoftext|>, then <|endoftext|>
//     (the pad token) up to 77.
//
// The vocabulary is a Hugging Face vocab.json and merges.txt: what a CLIP
// checkpoint ships, or what [ConvertOpenCLIPVocab] builds from the
// bpe_simple_vocab_16e6.txt.gz of OpenAI's CLIP and open_clip.
//
//	tok, err := cliptok.Load("vocab.json", "merges.txt")
//	ids := make([]int64, cliptok.ContextLength)
//	err = tok.Encode("a photo of a cat", ids)
package cliptok

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// ContextLength is the number of ids CLIP's text tower takes.
const ContextLength = 77

// The special tokens of CLIP's vocabulary.
const (
	StartToken = "<|startoftext|>"
	EndToken   = "<|endoftext|>"
)

// ErrInvalidText is returned for a text that is not UTF-8.
var ErrInvalidText = errors.New("text is not valid UTF-8")

// Tokenizer encodes texts. Safe for concurrent use.
type Tokenizer struct {
	vocab      map[string]int64
	ranks      map[[2]string]int
	start, end int64
	size       int // ids are below size

	mu    sync.Mutex
	cache map[string][]int64 // piece -> ids
}

// maxCached bounds the piece cache; it is cleared when full.
const maxCached = 1 << 16

// Load reads a Hugging Face vocab.json and merges.txt.
func Load(vocabPath, mergesPath string) (*Tokenizer, error) {
	vb, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	mb, err := os.ReadFile(mergesPath)
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	return New(vb, mb)
}

// New builds a Tokenizer from the contents of vocab.json and merges.txt.
func New(vocabJSON, mergesTxt []byte) (*Tokenizer, error) {
	var vocab map[string]int64
	if err := json.Unmarshal(vocabJSON, &vocab); err != nil {
		return nil, fmt.Errorf("clip tokenizer: vocab.json: %w", err)
	}
	t := &Tokenizer{vocab: vocab, ranks: map[[2]string]int{}, cache: map[string][]int64{}}
	seen := make(map[int64]bool, len(vocab))
	for tok, id := range vocab {
		if id < 0 || seen[id] {
			return nil, fmt.Errorf("clip tokenizer: vocab.json: id %d of %q is negative or taken twice", id, tok)
		}
		seen[id] = true
		t.size = max(t.size, int(id)+1)
	}
	if t.size != len(vocab) {
		return nil, fmt.Errorf("clip tokenizer: vocab.json: %d tokens but ids up to %d", len(vocab), t.size-1)
	}
	var ok1, ok2 bool
	if t.start, ok1 = vocab[StartToken]; !ok1 {
		return nil, fmt.Errorf("clip tokenizer: vocab.json has no %s", StartToken)
	}
	if t.end, ok2 = vocab[EndToken]; !ok2 {
		return nil, fmt.Errorf("clip tokenizer: vocab.json has no %s", EndToken)
	}
	for _, r := range byteRunes {
		for _, s := range []string{string(r), string(r) + "</w>"} {
			if _, ok := vocab[s]; !ok {
				return nil, fmt.Errorf("clip tokenizer: vocab.json lacks the byte token %q: not a byte-level BPE vocabulary", s)
			}
		}
	}
	for i, line := range strings.Split(string(mergesTxt), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || (i == 0 && strings.HasPrefix(line, "#version")) {
			continue
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("clip tokenizer: merges.txt line %d: %q is not a pair", i+1, line)
		}
		if _, ok := vocab[a+b]; !ok {
			return nil, fmt.Errorf("clip tokenizer: merges.txt line %d: %q merges into a token the vocabulary lacks", i+1, line)
		}
		if _, dup := t.ranks[[2]string{a, b}]; !dup {
			t.ranks[[2]string{a, b}] = len(t.ranks)
		}
	}
	if len(t.ranks) == 0 {
		return nil, errors.New("clip tokenizer: merges.txt has no merges")
	}
	return t, nil
}

// VocabSize is the number of ids; every id Encode writes is below it.
func (t *Tokenizer) VocabSize() int { return t.size }

// StartID and EndID are the ids of <|startoftext|> and <|endoftext|>
// (also the padding).
func (t *Tokenizer) StartID() int64 { return t.start }

// EndID is the id of <|endoftext|>, which also pads.
func (t *Tokenizer) EndID() int64 { return t.end }

// Encode writes the ids of text into ids, whose length is the context
// (ContextLength for CLIP): start, as many of the text's tokens as fit,
// end, then padding. Only the start of a long text is tokenised.
func (t *Tokenizer) Encode(text string, ids []int64) error {
	if len(ids) < 2 {
		return fmt.Errorf("clip tokenizer: a context of %d ids cannot hold the start and end tokens", len(ids))
	}
	if !utf8.ValidString(text) {
		return ErrInvalidText
	}
	room := len(ids) - 2
	out := ids[:1]
	out[0] = t.start
	for seg := Normalize(text); seg != "" && len(out)-1 < room; {
		// A special token spelled out in the text is that token.
		i, tok := nextSpecial(seg)
		plain := seg
		if i >= 0 {
			plain = seg[:i]
		}
		out = t.encodePlain(plain, out, room+1)
		if i < 0 {
			break
		}
		if len(out)-1 < room {
			if tok == StartToken {
				out = append(out, t.start)
			} else {
				out = append(out, t.end)
			}
		}
		seg = seg[i+len(tok):]
	}
	out = append(out, t.end)
	for len(out) < len(ids) {
		out = append(out, t.end)
	}
	return nil
}

func nextSpecial(s string) (int, string) {
	a, b := strings.Index(s, StartToken), strings.Index(s, EndToken)
	switch {
	case a < 0 && b < 0:
		return -1, ""
	case b < 0 || (a >= 0 && a < b):
		return a, StartToken
	default:
		return b, EndToken
	}
}

// pieces is CLIPTokenizerFast's pre-tokenizer pattern. Its \s is ASCII in
// Go's syntax, which is enough: Normalize has made every white space a
// plain space.
var pieces = regexp.MustCompile(`'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`)

// encodePlain appends the BPE ids of s's pieces to out until out holds
// limit ids.
func (t *Tokenizer) encodePlain(s string, out []int64, limit int) []int64 {
	for len(s) > 0 && len(out) < limit {
		loc := pieces.FindStringIndex(s)
		if loc == nil {
			break
		}
		for _, id := range t.bpe(s[loc[0]:loc[1]]) {
			if len(out) == limit {
				break
			}
			out = append(out, id)
		}
		s = s[loc[1]:]
	}
	return out
}

// Normalize is the tokenizer's normaliser: NFC, white space runs to one
// space, lower case (one rune to its lower case, as Rust's
// char::to_lowercase: İ becomes i and a combining dot).
func Normalize(text string) string {
	s := norm.NFC.String(text)
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = false
		if r == 'İ' {
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// bpe returns the ids of one piece.
func (t *Tokenizer) bpe(piece string) []int64 {
	t.mu.Lock()
	ids, ok := t.cache[piece]
	t.mu.Unlock()
	if ok {
		return ids
	}
	// The piece's bytes in the printable alphabet; the last one ends the word.
	word := make([]string, 0, len(piece))
	for i := 0; i < len(piece); i++ {
		word = append(word, string(byteRunes[piece[i]]))
	}
	word[len(word)-1] += "</w>"
	for len(word) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(word); i++ {
			if r, ok := t.ranks[[2]string{word[i], word[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		a, b := word[at], word[at+1]
		merged := word[:0:0]
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == a && word[i+1] == b {
				merged = append(merged, a+b)
				i++
				continue
			}
			merged = append(merged, word[i])
		}
		word = merged
	}
	ids = make([]int64, len(word))
	for i, w := range word {
		// Every byte and every merge is in the vocabulary (New checks).
		ids[i] = t.vocab[w]
	}
	t.mu.Lock()
	if len(t.cache) >= maxCached {
		clear(t.cache)
	}
	t.cache[piece] = ids
	t.mu.Unlock()
	return ids
}

// byteRunes is GPT-2's byte-to-rune table: printable Latin-1 bytes stand
// for themselves, the others for the runes from U+0100 on, in order.
var byteRunes = func() [256]rune {
	var t [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
	}
	return t
}()
