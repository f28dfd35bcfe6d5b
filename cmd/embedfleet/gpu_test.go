package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// TestGPUPathErrors: --device cuda:N loads ONNX Runtime's GPU build (the
// one deps.sh gpu installs, or --ort-gpu-lib), and each way it can fail on
// a machine without a GPU says what is missing: the GPU build itself, the
// CUDA libraries it needs, or a CPU build given in its place.
func TestGPUPathErrors(t *testing.T) {
	gpuLib := testenv.Binary(t, testenv.EnvORTGPULib)
	cpuLib := testenv.Binary(t, testenv.EnvORTLib)
	img := repoPath(t, "shared", "imageprep", "testdata", "images", "photo_481x321.jpg")
	model := filepath.Join(tinyModels(t), "clip-vit-b32")
	for _, c := range []struct {
		name string
		env  []string
		says []string
	}{
		{"the GPU build, no CUDA here", []string{"EMBEDFLEET_ORT_GPU_LIB=" + gpuLib},
			[]string{"CUDA execution provider is not available", embed.ORTGPUVersion, "libcu", "LD_LIBRARY_PATH"}},
		{"a CPU build given as the GPU one", []string{"EMBEDFLEET_ORT_GPU_LIB=" + cpuLib},
			[]string{"CUDA execution provider is not available", "a CPU build", "deploy/install/deps.sh gpu"}},
		{"no GPU build at all", []string{"EMBEDFLEET_ORT_GPU_LIB=" + filepath.Join(t.TempDir(), "libonnxruntime.so")},
			[]string{"--device cuda:0", "deploy/install/deps.sh gpu", "--ort-gpu-lib"}},
	} {
		out, err := run(t, c.env, "embed", "--device", "cuda:0", "--model", model, img)
		if err == nil {
			if strings.Contains(out, `"embedding"`) {
				t.Skip("this machine has a GPU that works: nothing to check")
			}
			t.Fatalf("%s: no error:\n%s", c.name, out)
		}
		for _, s := range c.says {
			if !strings.Contains(out, s) {
				t.Errorf("%s: the error does not say %q:\n%s", c.name, s, out)
			}
		}
	}
	// The CPU path is untouched by the GPU build's presence.
	if out, err := run(t, []string{"EMBEDFLEET_ORT_LIB=" + cpuLib, "EMBEDFLEET_ORT_GPU_LIB=" + gpuLib}, "embed", "--model", model, img); err != nil {
		t.Fatalf("cpu embed: %v\n%s", err, out)
	}
}

func TestORTGPUVersionMatchesInstaller(t *testing.T) {
	script, err := os.ReadFile(repoPath(t, "deploy", "install", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "\nORT_GPU_VERSION="+embed.ORTGPUVersion+"\n") {
		t.Fatalf("deploy/install/deps.sh does not pin ONNX Runtime's GPU build %s, which --device cuda:N looks for", embed.ORTGPUVersion)
	}
}

// TestGPUImagePinsTheInstallersWheel: Dockerfile.gpu takes the same
// onnxruntime-gpu wheel, by the same sha256, as deploy/install/deps.sh gpu.
func TestGPUImagePinsTheInstallersWheel(t *testing.T) {
	script, err := os.ReadFile(repoPath(t, "deploy", "install", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	docker, err := os.ReadFile(repoPath(t, "deploy", "docker", "Dockerfile.gpu"))
	if err != nil {
		t.Fatal(err)
	}
	pin := func(text, key string) string {
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimPrefix(strings.TrimSpace(line), "ARG ")
			if v, ok := strings.CutPrefix(line, key+"="); ok {
				return v
			}
		}
		return ""
	}
	for _, key := range []string{"ORT_GPU_VERSION", "ORT_GPU_WHEEL", "ORT_GPU_WHEEL_SHA256"} {
		if a, b := pin(string(script), key), pin(string(docker), key); a == "" || a != b {
			t.Errorf("%s: deps.sh has %q, Dockerfile.gpu %q", key, a, b)
		}
	}
}
