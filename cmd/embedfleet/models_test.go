package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

func repoPath(t testing.TB, parts ...string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

func ortEnv(t testing.TB, modelsDir string) []string {
	return []string{"EMBEDFLEET_ORT_LIB=" + testenv.Binary(t, testenv.EnvORTLib), "EMBEDFLEET_MODELS_DIR=" + modelsDir}
}

// tinyModels is the folder of the committed tiny random-init models.
func tinyModels(t testing.TB) string { return repoPath(t, "shared", "embed", "testdata", "models") }

type seedFixture struct {
	Models map[string]struct {
		SeedSimilarity struct{ Score, Cosine float64 } `json:"seed_similarity"`
	} `json:"models"`
}

// TestSimilarityMatchesArticle runs `embedfleet similarity` on the article's
// two example images and compares with the article's own code on the same
// (tiny, random-init) weights.
func TestSimilarityMatchesArticle(t *testing.T) {
	var fx seedFixture
	b, err := os.ReadFile(repoPath(t, "shared", "embed", "testdata", "embeddings.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	seed := repoPath(t, "..", "shared", "seed")
	out, err := run(t, ortEnv(t, tinyModels(t)), "similarity", "--model", "clip-vit-b32,dinov2-base", "--no-exif-orientation",
		filepath.Join(seed, "img1.jpg"), filepath.Join(seed, "img2.jpg"))
	if err != nil {
		t.Fatalf("similarity: %v\n%s", err, out)
	}
	for name, want := range fx.Models {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, name+" ") {
				line = l
			}
		}
		i := strings.Index(line, "similarity=")
		if i < 0 {
			t.Fatalf("no similarity line for %s in:\n%s", name, out)
		}
		got, err := strconv.ParseFloat(strings.Fields(line[i+len("similarity="):])[0], 64)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-want.SeedSimilarity.Score) > 1e-3 {
			t.Errorf("%s: similarity %.6f, the article's code %.6f", name, got, want.SeedSimilarity.Score)
		}
	}
}

func TestSimilarityErrors(t *testing.T) {
	env := ortEnv(t, tinyModels(t))
	img := repoPath(t, "..", "shared", "seed", "img1.jpg")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"similarity", "--model", "clip-vit-b32", img}, "accepts 2 arg(s)"},
		{[]string{"similarity", img, img}, `required flag(s) "model" not set`},
		{[]string{"similarity", "--model", "no-such-model", img, img}, "model not found"},
		{[]string{"similarity", "--model", "clip-vit-b32", img, "/nonexistent.jpg"}, "/nonexistent.jpg"},
		{[]string{"similarity", "--model", "clip-vit-b32", img, repoPath(t, "go.mod")}, "not an image"},
	} {
		out, err := run(t, env, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: err %v, output %q; want failure mentioning %q", tc.args, err, out, tc.want)
		}
	}
}

// TestEmbedJSONLKeepsGoingPastBadFiles embeds good and bad files: every good
// file gets a vector, every bad one an error record, order is kept, and the
// exit status says that some failed.
func TestEmbedJSONLKeepsGoingPastBadFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jpg")
	os.WriteFile(bad, []byte("not a jpeg"), 0o644)
	imgs := repoPath(t, "shared", "imageprep", "testdata", "images")
	files := []string{filepath.Join(imgs, "photo_481x321.jpg"), bad, filepath.Join(imgs, "rgba_157x211.png"), filepath.Join(dir, "missing.jpg"), filepath.Join(imgs, "small_100x75.jpg")}
	out, err := runSplit(t, ortEnv(t, tinyModels(t)), append([]string{"embed", "--model", "dinov2-base", "--batch", "2"}, files...)...)
	if err == nil {
		t.Fatal("embed with bad files exited 0")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(files) {
		t.Fatalf("%d output lines for %d files:\n%s", len(lines), len(files), out)
	}
	for i, l := range lines {
		var rec struct {
			File      string    `json:"file"`
			Model     string    `json:"model"`
			Embedding []float64 `json:"embedding"`
			Error     string    `json:"error"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		if rec.File != files[i] {
			t.Fatalf("line %d is for %s, want %s (order kept)", i, rec.File, files[i])
		}
		wantErr := files[i] == bad || strings.HasSuffix(files[i], "missing.jpg")
		if wantErr != (rec.Error != "") || (!wantErr && (len(rec.Embedding) != 32 || rec.Model != "dinov2-base")) {
			t.Fatalf("line %d: %s", i, l)
		}
	}
}

func TestEmbedNPY(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "v.npy")
	imgs := repoPath(t, "shared", "imageprep", "testdata", "images")
	names := []string{"photo_481x321.jpg", "photo_320x480.jpg", "gray_300x300.jpg"}
	var files []string
	for _, n := range names {
		files = append(files, filepath.Join(imgs, n))
	}
	if o, err := run(t, ortEnv(t, tinyModels(t)), append([]string{"embed", "--model", "clip-vit-b32", "--format", "npy", "-o", out}, files...)...); err != nil {
		t.Fatalf("embed: %v\n%s", err, o)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x93NUMPY\x01\x00")) {
		t.Fatal("not a .npy file")
	}
	hl := int(binary.LittleEndian.Uint16(b[8:10]))
	header := string(b[10 : 10+hl])
	if !strings.Contains(header, "'shape': (3, 16)") || !strings.Contains(header, "'<f4'") {
		t.Fatalf("header %q", header)
	}
	data := b[10+hl:]
	if len(data) != 3*16*4 {
		t.Fatalf("%d data bytes, want %d", len(data), 3*16*4)
	}
	var norm float64
	for i := 0; i < 16; i++ {
		v := math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		norm += float64(v) * float64(v)
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Fatalf("first row |v|^2 = %v, want 1", norm)
	}
	rows, _ := os.ReadFile(out + ".files.txt")
	if strings.TrimSpace(string(rows)) != strings.Join(files, "\n") {
		t.Fatalf("files.txt:\n%s", rows)
	}
}

func TestModelsListAndVerify(t *testing.T) {
	env := ortEnv(t, tinyModels(t))
	out, err := run(t, env, "models", "list")
	if err != nil || !regexp.MustCompile(`clip-vit-b32 +16 `).MatchString(out) || !strings.Contains(out, "mean pool") ||
		!strings.Contains(out, "pairs with clip-vit-b32") {
		t.Fatalf("models list: %v\n%s", err, out)
	}
	out, err = run(t, env, "models", "verify")
	if err != nil || strings.Count(out, "ok ") != 3 { // the two image towers and CLIP's text tower
		t.Fatalf("models verify: %v\n%s", err, out)
	}
	// A damaged copy fails verification.
	dir := t.TempDir()
	copyModel(t, filepath.Join(tinyModels(t), "clip-vit-b32"), filepath.Join(dir, "clip-vit-b32"))
	f, _ := os.OpenFile(filepath.Join(dir, "clip-vit-b32", "model.onnx"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0})
	f.Close()
	out, err = run(t, ortEnv(t, dir), "models", "verify", "clip-vit-b32")
	if err == nil || !strings.Contains(out, "FAIL") || !strings.Contains(out, "sha256") {
		t.Fatalf("verify of a damaged model: %v\n%s", err, out)
	}
}

func copyModel(t *testing.T, from, to string) {
	t.Helper()
	os.MkdirAll(to, 0o755)
	for _, n := range []string{"model.onnx", "spec.json"} {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, n), b, 0o644)
	}
}

// TestModelsPull serves a hub layout from a local HTTP server (the hub is
// not reachable here) and pulls a model from it: pinned revision, sha256
// recorded and checked, tensors checked, and a bad pull leaves nothing.
func TestModelsPull(t *testing.T) {
	onnx, err := os.ReadFile(filepath.Join(tinyModels(t), "dinov2-base", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	var gotAuth atomic.Value
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		switch r.URL.Path {
		case "/acme/dino-onnx/resolve/0123abc/onnx/model.onnx":
			w.Write(onnx)
		case "/acme/dino-onnx/resolve/0123abc/onnx/garbage.onnx":
			w.Write([]byte("not onnx"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer hub.Close()
	dir := t.TempDir()
	env := append(ortEnv(t, dir), "HF_TOKEN=secret-token")
	pull := func(extra ...string) (string, error) {
		args := append([]string{"models", "pull", "--endpoint", hub.URL, "--repo", "acme/dino-onnx", "--revision", "0123abc",
			"--model", "dinov2-base"}, extra...)
		return run(t, env, args...)
	}

	out, err := pull("--file", "onnx/model.onnx", "--name", "dino-tiny")
	if err == nil {
		t.Fatalf("pulling a 32-d model as dinov2-base (768-d) succeeded:\n%s", out)
	}
	if !strings.Contains(out, "768") {
		t.Fatalf("dimension mismatch not explained:\n%s", out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a failed pull left %d entries in the models folder", len(entries))
	}
	if got, _ := gotAuth.Load().(string); got != "Bearer secret-token" {
		t.Fatalf("HF_TOKEN not sent as a bearer token (got %q)", got)
	}
	if strings.Contains(out, "secret-token") {
		t.Fatal("the token appears in the output")
	}

	for _, tc := range []struct{ file, want string }{
		{"onnx/missing.onnx", "404"},
		{"onnx/garbage.onnx", "not a dinov2-base export"},
	} {
		if out, err := pull("--file", tc.file); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("pull %s: %v\n%s", tc.file, err, out)
		}
	}
	if out, err := pull("--file", "onnx/model.onnx", "--sha256", strings.Repeat("0", 64)); err == nil || !strings.Contains(out, "expected") {
		t.Errorf("pull with a wrong --sha256: %v\n%s", err, out)
	}

	// The same file described with its real dimension is pulled, recorded
	// and usable.
	sum := sha256.Sum256(onnx)
	digest := hex.EncodeToString(sum[:])
	out, err = pull("--file", "onnx/model.onnx", "--name", "dino-tiny", "--dim", "32", "--sha256", digest)
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	specJSON, err := os.ReadFile(filepath.Join(dir, "dino-tiny", "spec.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"version": "sha256:` + digest, `"revision": "0123abc"`, `"repo": "acme/dino-onnx"`, `"pooling": "mean"`, `"dim": 32`} {
		if !strings.Contains(string(specJSON), want) {
			t.Errorf("spec.json lacks %s:\n%s", want, specJSON)
		}
	}
	if strings.Contains(string(specJSON), "secret-token") {
		t.Error("the token was written into spec.json")
	}
	img := repoPath(t, "..", "shared", "seed", "img1.jpg")
	if out, err := run(t, env, "similarity", "--model", "dino-tiny", img, img); err != nil || !strings.Contains(out, "similarity=1.000000") {
		t.Fatalf("similarity with the pulled model: %v\n%s", err, out)
	}
}

// runSplit runs the binary and returns stdout alone.
func runSplit(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := execCommand(args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Logf("stderr: %s", stderr.String())
	}
	return stdout.String(), err
}

// TestModelsSyncFromS3 copies the models from a MinIO bucket, as a worker
// pod's init step does, and refuses a file that does not match its spec.
func TestModelsSyncFromS3(t *testing.T) {
	t.Parallel()
	m := testenv.StartMinIO(t)
	ctx := context.Background()
	put := func(key string, data []byte) {
		if _, err := m.Client.PutObject(ctx, m.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"clip-vit-b32", "dinov2-base", "clip-vit-b32-text"} {
		for _, f := range []string{"spec.json", "model.onnx"} {
			b, err := os.ReadFile(filepath.Join(tinyModels(t), name, f))
			if err != nil {
				t.Fatal(err)
			}
			put("models/"+name+"/"+f, b)
		}
	}
	// The text tower's tokenizer files travel with it.
	for _, f := range []string{"vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(testenv.CLIPVocab(t), f))
		if err != nil {
			t.Fatal(err)
		}
		put("models/clip-vit-b32-text/"+f, b)
	}
	dir := t.TempDir()
	env := append(ortEnv(t, dir), "AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
	args := []string{"models", "sync", "--from", "s3://" + m.Bucket + "/models/", "--s3-endpoint", m.Endpoint, "--s3-insecure", "--s3-path-style"}
	out, err := run(t, env, args...)
	if err != nil || strings.Count(out, "ok ") != 3 { // the two image towers and CLIP's text tower
		t.Fatalf("sync: %v\n%s", err, out)
	}
	if out, err := run(t, env, "models", "verify"); err != nil || strings.Count(out, "ok ") != 3 {
		t.Fatalf("verify after sync: %v\n%s", err, out)
	}
	for _, f := range []string{"vocab.json", "merges.txt"} {
		if _, err := os.Stat(filepath.Join(dir, "clip-vit-b32-text", f)); err != nil {
			t.Fatalf("the text tower's %s was not synced: %v", f, err)
		}
	}
	// A tampered file upstream is refused; a models folder that already has
	// this version does not even fetch it.
	onnx, _ := os.ReadFile(filepath.Join(tinyModels(t), "clip-vit-b32", "model.onnx"))
	put("models/clip-vit-b32/model.onnx", append(onnx, 0x32, 0x01, 'x'))
	fresh := append(ortEnv(t, t.TempDir()), "AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
	out, err = run(t, fresh, args...)
	if err == nil || !strings.Contains(out, "spec says") {
		t.Fatalf("sync of a tampered model: %v\n%s", err, out)
	}
	if out, err := run(t, env, args...); err != nil || strings.Count(out, "ok ") != 3 {
		t.Fatalf("sync into the up-to-date folder: %v\n%s", err, out)
	}
	if out, err := run(t, env, "models", "verify", "clip-vit-b32"); err != nil {
		t.Fatalf("the installed model was damaged: %v\n%s", err, out)
	}
}
