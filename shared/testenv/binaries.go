package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Environment variables naming the installed binaries. deploy/install/deps.sh
// --env prints them.
const (
	EnvMinIOBin  = "EMBEDFLEET_MINIO_BIN"
	EnvNATSBin   = "EMBEDFLEET_NATS_BIN"
	EnvMilvusBin = "EMBEDFLEET_MILVUS_BIN"
	// EnvMilvusServerHome names the real Milvus server's folder (deps.sh
	// milvus-server): bin/milvus and the config template.
	EnvMilvusServerHome = "EMBEDFLEET_MILVUS_SERVER_HOME"
	EnvORTLib           = "EMBEDFLEET_ORT_LIB"
	// EnvORTGPULib names ONNX Runtime's GPU build (deps.sh gpu).
	EnvORTGPULib = "EMBEDFLEET_ORT_GPU_LIB"
	EnvHelmBin   = "EMBEDFLEET_HELM_BIN"
	// EnvCLIPVocab names the folder with CLIP's vocab.json and merges.txt.
	EnvCLIPVocab = "EMBEDFLEET_CLIP_VOCAB"
	// EnvChromiumBin names the headless browser of the search page tests.
	EnvChromiumBin = "EMBEDFLEET_CHROMIUM_BIN"
)

var (
	depsOnce sync.Once
	depsEnv  map[string]string
	depsErr  error
)

// RepoRoot returns the root of the embedfleet checkout that holds the
// package under test (the directory with go.mod).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// installedPaths asks deploy/install/deps.sh where it installs each piece.
func installedPaths() (map[string]string, error) {
	depsOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			depsErr = err
			return
		}
		out, err := exec.Command("bash", filepath.Join(root, "deploy/install/deps.sh"), "--env").Output()
		if err != nil {
			depsErr = fmt.Errorf("deploy/install/deps.sh --env: %w", err)
			return
		}
		depsEnv = map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
			if k, v, ok := strings.Cut(line, "="); ok {
				depsEnv[k] = v
			}
		}
	})
	return depsEnv, depsErr
}

// Binary returns the path of the installed piece named by the environment
// variable env (one of the Env* constants). It fails the test, naming the
// make target that installs it, when the file is not there.
func Binary(t testing.TB, env string) string {
	t.Helper()
	skipShort(t, env)
	path, err := lookupBinary(env)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// CLIPVocab returns the folder that holds CLIP's vocab.json and merges.txt
// (deploy/install/deps.sh clip-vocab). Files, not a server: under -short it
// skips only when they are not installed.
func CLIPVocab(t testing.TB) string {
	t.Helper()
	path, err := lookupBinary(EnvCLIPVocab)
	if err != nil {
		if testing.Short() {
			t.Skipf("needs CLIP's vocabulary: %v", err)
		}
		t.Fatal(err)
	}
	return path
}

func lookupBinary(env string) (string, error) {
	path := os.Getenv(env)
	if path == "" {
		paths, err := installedPaths()
		if err != nil {
			return "", fmt.Errorf("testenv: cannot locate %s: %w; run `make deps`", env, err)
		}
		path = paths[env]
	}
	if path == "" {
		return "", fmt.Errorf("testenv: %s is not set and deploy/install/deps.sh does not name it", env)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("testenv: %s=%s is not installed (%v): run `make deps` (deploy/install/deps.sh) to install it", env, path, err)
	}
	return path, nil
}

// RandomModelsDir is where `make random-models` exports the full-size
// random-init models the benchmarks use: BENCH_MODELS_DIR, else
// ~/.cache/embedfleet/models-random-4 (the Makefile's RANDOM_MODELS).
func RandomModelsDir() string {
	if dir := os.Getenv("BENCH_MODELS_DIR"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "embedfleet", "models-random-4")
}
