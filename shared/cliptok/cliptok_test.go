package cliptok_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/cliptok"
)

// testTokenizer loads the vocabulary deploy/install/deps.sh clip-vocab
// installs (EMBEDFLEET_CLIP_VOCAB, or where deps.sh --env says). Not
// through shared/testenv: this package's tests, fuzzing included, should
// not build the servers' client libraries.
func testTokenizer(t testing.TB) *cliptok.Tokenizer {
	t.Helper()
	dir := vocabDir(t)
	tok, err := cliptok.Load(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type parityFile struct {
	Context int `json:"context_length"`
	Cases   []struct {
		Category string  `json:"category"`
		Text     string  `json:"text"`
		IDs      []int64 `json:"ids"`
	} `json:"cases"`
}

// TestParity: every fixture text gets exactly the ids of transformers'
// CLIPTokenizerFast (deploy/export/make_tokenizer_fixtures.py made them).
func TestParity(t *testing.T) {
	tok := testTokenizer(t)
	b, err := os.ReadFile("testdata/parity.json")
	if err != nil {
		t.Fatal(err)
	}
	var pf parityFile
	if err := json.Unmarshal(b, &pf); err != nil {
		t.Fatal(err)
	}
	if pf.Context != cliptok.ContextLength || len(pf.Cases) < 2000 {
		t.Fatalf("fixture: context %d, %d cases; want %d and at least 2000", pf.Context, len(pf.Cases), cliptok.ContextLength)
	}
	got := make([]int64, cliptok.ContextLength)
	bad := 0
	for i, c := range pf.Cases {
		want := slices.Clone(c.IDs)
		for len(want) < cliptok.ContextLength {
			want = append(want, tok.EndID())
		}
		if err := tok.Encode(c.Text, got); err != nil {
			t.Errorf("case %d (%s) %q: %v", i, c.Category, c.Text, err)
			bad++
			continue
		}
		if !slices.Equal(got, want) {
			bad++
			if bad <= 10 {
				t.Errorf("case %d (%s) %q:\n got %v\nwant %v", i, c.Category, c.Text, trim(got, tok.EndID()), c.IDs)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d texts differ from CLIPTokenizerFast", bad, len(pf.Cases))
	}
}

func vocabDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("EMBEDFLEET_CLIP_VOCAB")
	if dir == "" {
		out, err := exec.Command("bash", "../../deploy/install/deps.sh", "--env").Output()
		if err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "export EMBEDFLEET_CLIP_VOCAB="); ok {
					dir = v
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vocab.json")); dir == "" || err != nil {
		msg := "CLIP's vocabulary is not installed: run `deploy/install/deps.sh clip-vocab` (make test does)"
		if testing.Short() {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	return dir
}

func trim(ids []int64, end int64) []int64 {
	n := len(ids)
	for n > 0 && ids[n-1] == end {
		n--
	}
	return ids[:n]
}

// FuzzEncode: any text gives cliptok.ContextLength valid ids, starting with the
// start token and ending with the end token, or cliptok.ErrInvalidText for bytes
// that are not UTF-8; nothing panics.
func FuzzEncode(f *testing.F) {
	tok := testTokenizer(f)
	for _, s := range []string{"a photo of a cat", "", "<|endoftext|>", "👩‍👩‍👧‍👦 İstanbul", "don't\u00a0STOP", "\xff\xfe", "&amp;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ids := make([]int64, cliptok.ContextLength)
		if err := tok.Encode(text, ids); err != nil {
			if err != cliptok.ErrInvalidText {
				t.Fatalf("%q: %v", text, err)
			}
			return
		}
		if ids[0] != tok.StartID() || ids[cliptok.ContextLength-1] != tok.EndID() {
			t.Fatalf("%q: ids %v do not start with %d and end with %d", text, ids, tok.StartID(), tok.EndID())
		}
		for _, id := range ids {
			if id < 0 || id >= int64(tok.VocabSize()) {
				t.Fatalf("%q: id %d outside the vocabulary of %d", text, id, tok.VocabSize())
			}
		}
	})
}

func TestEncodeErrors(t *testing.T) {
	tok := testTokenizer(t)
	if err := tok.Encode("\xff", make([]int64, cliptok.ContextLength)); err != cliptok.ErrInvalidText {
		t.Errorf("invalid UTF-8: %v, want cliptok.ErrInvalidText", err)
	}
	if err := tok.Encode("x", make([]int64, 1)); err == nil {
		t.Error("a context of 1 id was accepted")
	}
	// A long text costs what its first 75 tokens cost, not its length.
	long := make([]byte, 8<<20)
	for i := range long {
		long[i] = "ab "[i%3]
	}
	ids := make([]int64, cliptok.ContextLength)
	if err := tok.Encode(string(long), ids); err != nil {
		t.Fatal(err)
	}
	if ids[cliptok.ContextLength-1] != tok.EndID() || ids[cliptok.ContextLength-2] == tok.EndID() {
		t.Errorf("a long text is not truncated to a full context: %v", ids)
	}
}

func TestNewRejects(t *testing.T) {
	good := []byte(`{"!":0}`)
	for name, c := range map[string][2][]byte{
		"not json":      {[]byte("{"), []byte("a b\n")},
		"no specials":   {good, []byte("a b\n")},
		"no merges":     {[]byte(`{"<|startoftext|>":0,"<|endoftext|>":1}`), nil},
		"duplicate ids": {[]byte(`{"a":0,"b":0}`), nil},
	} {
		if _, err := cliptok.New(c[0], c[1]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	tok := testTokenizer(b)
	ids := make([]int64, cliptok.ContextLength)
	texts := []string{"a photo of a dog playing in the snow", "Ein Foto von einer Katze auf dem Tisch", "一只猫坐在桌子上 🐱"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = tok.Encode(texts[i%len(texts)], ids)
	}
}
