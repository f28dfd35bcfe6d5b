package main

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

// TestServeCommand runs `embedfleet serve` as a process on real Milvus: it
// logs its address, answers /v1/models and a search (404 before anything is
// indexed, as JSON), exposes its metrics, and exits 0 on SIGTERM.
func TestServeCommand(t *testing.T) {
	t.Parallel()
	mv := testenv.StartMilvus(t)
	base, cmd := startServe(t, ortEnv(t, tinyModels(t)), "--models", "clip-vit-b32", "--milvus-addr", mv.Addr)

	get := func(path string) (int, string) {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/v1/models"); code != 200 || !strings.Contains(body, `"name":"clip-vit-b32"`) || !strings.Contains(body, `"dim":16`) {
		t.Fatalf("/v1/models: %d %s", code, body)
	}
	res, err := http.Post(base+"/v1/search", "image/png", strings.NewReader(string(stripPNG(t, 64, 48))))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 404 || !strings.Contains(string(b), "index some images first") {
		t.Fatalf("search before indexing: %d %s", res.StatusCode, b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `embedfleet_http_requests_total{code="404",route="search_image"} 1`) {
		t.Fatalf("/metrics: %d, no count of the 404:\n%s", code, body)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d", code)
	}

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v, want exit 0", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("serve took %v to stop", d)
	}
}

// TestDevServe: `dev --serve` indexes a folder, then answers searches over
// HTTP from the same embedded stack until interrupted.
func TestDevServe(t *testing.T) {
	t.Parallel()
	dir, query := photoFolder(t, rand.New(rand.NewPCG(8, 8)), 12, 4, 0.6)
	cmd := execCommand("dev", "--images", dir, "--models", "dinov2-base", "--serve", "127.0.0.1:0")
	cmd.Env = append(cmd.Environ(), append(ortEnv(t, tinyModels(t)), "EMBEDFLEET_MILVUS_BIN="+testenv.Binary(t, testenv.EnvMilvusBin))...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := firstMatch(t, stdout, `serving searches on (http://\S+)`, "dev --serve never said where it serves")
	res, err := http.Post(base+"/v1/search?k=1", "image/jpeg", bytes.NewReader(query))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "p04.jpg") {
		t.Fatalf("search: %d %s, want p04.jpg", res.StatusCode, b)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev after Ctrl-C: %v, want exit 0", err)
	}
}

// startServe runs `embedfleet serve ARGS --listen 127.0.0.1:0` with env added
// to this process's, waits until it logs its address, and returns its base
// URL and the process, which is killed when the test ends (or earlier by
// the caller).
func startServe(tb testing.TB, env []string, args ...string) (string, *exec.Cmd) {
	tb.Helper()
	cmd := execCommand(append(append([]string{"serve"}, args...), "--listen", "127.0.0.1:0")...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return "http://" + firstMatch(tb, stderr, `msg=serving addr=(\S+)`, "serve never logged its address"), cmd
}

// firstMatch reads r line by line until one matches pattern and returns its
// first group, failing with msg if r ends first; the rest of r is drained
// so the process never blocks on a full pipe.
func firstMatch(t testing.TB, r io.Reader, pattern, msg string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, r) }()
			return m[1]
		}
	}
	t.Fatal(msg)
	return ""
}
