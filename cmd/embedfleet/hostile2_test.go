package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

// runWithin runs the binary and fails the test if it has not exited
// within d: a command that hangs on hostile input is a defect too.
func runWithin(t *testing.T, d time.Duration, env []string, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("embedfleet %s still running after %s:\n%s", strings.Join(args, " "), d, out)
	}
	return string(out), err
}

// TestHostileModelsBucket: a spec in the models bucket names the file it
// is written to; names that leave the model's folder, or are not plain
// names, are refused before any path is built, and nothing is written.
func TestHostileModelsBucket(t *testing.T) {
	t.Parallel()
	m := testenv.StartMinIO(t)
	ctx := context.Background()
	put := func(key string, data []byte) {
		t.Helper()
		if _, err := m.Client.PutObject(ctx, m.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	spec, err := os.ReadFile(filepath.Join(tinyModels(t), "clip-vit-b32", "spec.json"))
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("a payload that must land nowhere")
	sum := sha256.Sum256(payload)
	version := "sha256:" + hex.EncodeToString(sum[:])
	dir := filepath.Join(t.TempDir(), "models")
	victim := filepath.Join(dir, "victim")
	if err := os.MkdirAll(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "model.onnx"), []byte("the victim's file"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(ortEnv(t, dir), "AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
	for i, onnx := range []string{"../victim/model.onnx", "../escaped.onnx", "/tmp/embedfleet-abs.onnx", "sub/dir.onnx", "..", ".", "spec.json", "a\x1b]0;x\x07.onnx", "back\\slash.onnx"} {
		// The spec names the file; the payload sits where the spec's
		// folder and that name lead in the bucket, as an attacker would
		// put it, with the matching sha256 as the version.
		quoted, _ := json.Marshal(onnx)
		s := strings.Replace(string(spec), `"onnx": "model.onnx"`, `"onnx": `+string(quoted), 1)
		s = strings.Replace(s, `"name": "clip-vit-b32"`, fmt.Sprintf(`"name": "evil%d"`, i), 1)
		s = replaceVersion(t, s, version)
		prefix := fmt.Sprintf("case%d/models/evil%d/", i, i)
		put(prefix+"spec.json", []byte(s))
		if k := strings.TrimPrefix(filepath.Clean("/"+prefix+onnx), "/"); onnx != "." && onnx != ".." && onnx != "spec.json" {
			put(k, payload)
		}
		out, err := runWithin(t, time.Minute, env, nil, "models", "sync", "--from", fmt.Sprintf("s3://%s/case%d/models/", m.Bucket, i),
			"--s3-endpoint", m.Endpoint, "--s3-insecure", "--s3-path-style")
		if err == nil || !strings.Contains(out, "invalid file name") && !strings.Contains(out, "onnx cannot be") {
			t.Errorf("sync of a spec whose onnx is %q: %v\n%s", onnx, err, out)
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("the refusal of %q put an escape sequence on the terminal:\n%q", onnx, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(victim, "model.onnx")); string(b) != "the victim's file" {
		t.Fatalf("another model's file was replaced: %q", b)
	}
	for _, p := range []string{filepath.Join(dir, "escaped.onnx"), "/tmp/embedfleet-abs.onnx", filepath.Join(filepath.Dir(dir), "escaped.onnx")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("sync wrote %s", p)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("the models folder holds %v after refused syncs, want only victim", names)
	}
}

// replaceVersion sets a spec's version.
func replaceVersion(t *testing.T, spec, version string) string {
	t.Helper()
	i := strings.Index(spec, `"version": "`)
	if i < 0 {
		t.Fatalf("spec without a version:\n%s", spec)
	}
	j := strings.Index(spec[i+12:], `"`)
	return spec[:i+12] + version + spec[i+12+j:]
}

// TestPullBounds: a hub that sends without end, or a byte now and then,
// is cut off by --max-mb and --idle-timeout; nothing is kept.
func TestPullBounds(t *testing.T) {
	t.Parallel()
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1<<20)
		switch {
		case strings.HasSuffix(r.URL.Path, "/endless.onnx"):
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case strings.HasSuffix(r.URL.Path, "/declared.onnx"):
			w.Header().Set("Content-Length", fmt.Sprint(int64(8<<30)))
			_, _ = w.Write(chunk)
		case strings.HasSuffix(r.URL.Path, "/trickle.onnx"):
			for r.Context().Err() == nil {
				if _, err := w.Write([]byte{0}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}))
	defer hub.Close()
	dir := t.TempDir()
	env := ortEnv(t, dir)
	pull := func(file string, extra ...string) (string, time.Duration, error) {
		args := append([]string{"models", "pull", "--endpoint", hub.URL, "--repo", "acme/x", "--revision", "0123abc", "--model", "dinov2-base", "--file", file}, extra...)
		start := time.Now()
		out, err := runWithin(t, 90*time.Second, env, nil, args...)
		return out, time.Since(start), err
	}
	for _, c := range []struct {
		file  string
		extra []string
		want  string
	}{
		{"endless.onnx", []string{"--max-mb", "8"}, "over the limit of 8 MiB"},
		{"declared.onnx", nil, "over the limit of 4096 MiB"},
		{"trickle.onnx", []string{"--idle-timeout", "2s"}, "no data for 2s"},
	} {
		out, took, err := pull(c.file, c.extra...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("pull %s %v: %v after %v\n%s", c.file, c.extra, err, took, out)
		}
		if took > 30*time.Second {
			t.Errorf("pull %s took %v to give up", c.file, took)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("failed pulls left %d entries in the models folder", len(entries))
	}
	if out, _, err := pull("x.onnx", "--max-mb", "-1"); err == nil || !strings.Contains(out, "must be positive") {
		t.Fatalf("--max-mb -1: %v\n%s", err, out)
	}
}

// TestHostileKeysOnTerminal: object keys holding terminal escapes (CSI
// that erases a line, OSC that retitles the window, C1 controls, bidi
// overrides) reach no terminal as they are: coordinator run's failure
// list, verify's samples and query's hits print them escaped.
func TestHostileKeysOnTerminal(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4)
	c.startWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	put := func(key string, data []byte) {
		t.Helper()
		if _, err := c.minio.Client.PutObject(ctx, c.minio.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	good := testimages.JPEG(testimages.Photo(newRand(5), 120, 160), 90)
	put("imgs/ok\x1b[2K\x1b[1Aerased.jpg", good)
	put("imgs/bad\x1b]0;pwned\x07title.jpg", []byte("not an image at all"))
	put("imgs/rtl\u202egpj.exe", []byte("\xff\xd8\xff truncated"))
	bare := func(out string) {
		t.Helper()
		if i := strings.IndexAny(out, "\x1b\x07\u009b\u202e"); i >= 0 {
			t.Fatalf("raw control character in the output at %d:\n%q", i, out)
		}
	}
	out, code := c.run(t, "coordinator", "run", "--source", c.source, "--models", "clip-vit-b32,dinov2-base", "--wait", "--timeout", "2m", "--max-failed", "1")
	if code != 0 || !strings.Contains(out, `bad\x1b]0;pwned\x07title.jpg`) {
		t.Fatalf("run: %d\n%s", code, out)
	}
	bare(out)
	// A new object after the run: verify lists it as missing, by its key.
	put("imgs/new\x1b[31mred.jpg", good)
	out, _ = c.run(t, "verify", "--source", c.source, "--models", "clip-vit-b32")
	if !strings.Contains(out, `new\x1b[31mred.jpg`) {
		t.Fatalf("verify does not name the missing object:\n%s", out)
	}
	bare(out)
	out, code = c.run(t, "query", "--model", "clip-vit-b32", "--uri", c.source+"ok\x1b[2K\x1b[1Aerased.jpg", "--top-k", "3")
	if code != 0 || !strings.Contains(out, `ok\x1b[2K\x1b[1Aerased.jpg`) {
		t.Fatalf("query: %d\n%s", code, out)
	}
	bare(out)
	// An error that quotes a hostile value is escaped too.
	out, code = c.run(t, "query", "--model", "clip-vit-b32", "--uri", c.source+"missing\x1b]0;x\x07.jpg")
	if code == 0 {
		t.Fatalf("query of an object never indexed succeeded:\n%s", out)
	}
	bare(out)
}

// TestHostileLocalInputs: a FIFO, a device or a folder given as input is
// refused at once (it used to block in open(2), deaf to SIGINT and
// SIGTERM); a text file over its bound is an error, never cut short
// silently; one line past the bound of one text is a recorded failure,
// and the others are embedded.
func TestHostileLocalInputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	env := textEnv(t)
	for _, args := range [][]string{
		{"embed", "--model", "clip-vit-b32", fifo},
		{"embed", "--model", "clip-vit-b32-text", "--text-file", fifo},
		{"similarity", "--model", "clip-vit-b32", fifo, fifo},
		{"embed", "--model", "clip-vit-b32-text", "--text-file", "/dev/zero"},
		{"embed", "--model", "clip-vit-b32-text", "--text-file", dir},
	} {
		out, err := runWithin(t, 30*time.Second, env, nil, args...)
		if err == nil || !strings.Contains(out, "not a regular file") {
			t.Errorf("embedfleet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, []byte("a cat\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, maxTextFileBytes+1); err != nil {
		t.Fatal(err)
	}
	if out, err := runWithin(t, 30*time.Second, env, nil, "embed", "--model", "clip-vit-b32-text", "--text-file", big); err == nil || !strings.Contains(out, "split it") {
		t.Errorf("a text file over %d MiB: %v\n%s", maxTextFileBytes>>20, err, out)
	}
	// One long line among short ones, from stdin: 20 MB, never held.
	var in bytes.Buffer
	in.WriteString("a photo of a cat\r\n")
	in.WriteString(strings.Repeat("x", 20<<20))
	in.WriteString("\na photo of a dog")
	out, err := runWithin(t, time.Minute, env, &in, "embed", "--model", "clip-vit-b32-text", "--text-file", "-")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(out, "3 texts, 2 embedded, 1 failed") || !strings.Contains(out, "line 2 is over the 4096-byte limit") {
		t.Fatalf("a 20 MB line between two texts: %v\n%.2000s", err, out)
	}
}

// TestLineReader: lines as embed --text-file reads them.
func TestLineReader(t *testing.T) {
	in := "one\r\ntwo\n" + strings.Repeat("y", 100) + "\n\nlast"
	lr := newLineReader(strings.NewReader(in), 10, 1<<20)
	var got []string
	for {
		l, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errLineTooLong) {
			l = "LONG:" + l[:4]
		} else if err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
	}
	if want := "one|two|LONG:yyyy||last"; strings.Join(got, "|") != want {
		t.Fatalf("lines %q, want %q", strings.Join(got, "|"), want)
	}
	lr = newLineReader(strings.NewReader(strings.Repeat("z\n", 100)), 10, 50)
	var err error
	for err == nil {
		_, err = lr.next()
	}
	if errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "split it") {
		t.Fatalf("input past its bound: %v", err)
	}
}

// TestBadFlagValues: values no run can use are refused before anything
// starts.
func TestBadFlagValues(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"coordinator", "run", "--source", "s3://b/", "--models", "clip-vit-b32", "--max-failed", "-0.5"}, "--max-failed is a fraction"},
		{[]string{"coordinator", "run", "--source", "s3://b/", "--models", "clip-vit-b32", "--max-failed", "1.5"}, "--max-failed is a fraction"},
		{[]string{"query", "--model", "clip-vit-b32", "--uri", "s3://b/x.jpg", "--top-k", "100000"}, "--top-k must be from 1 to 16383"},
		{[]string{"query", "--model", "clip-vit-b32", "--uri", "s3://b/x.jpg", "--top-k", "0"}, "--top-k must be from 1"},
		{[]string{"serve", "--models", "clip-vit-b32", "--max-k", "20000"}, "below 16384"},
	} {
		out, err := runWithin(t, 30*time.Second, ortEnv(t, tinyModels(t)), nil, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("embedfleet %s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
}
