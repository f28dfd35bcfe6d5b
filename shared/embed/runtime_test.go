package embed_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

// TestInitMissingLibrary checks the error for a library that is not there,
// and that the failure loads nothing.
func TestInitMissingLibrary(t *testing.T) {
	_, err := embed.Init("/nonexistent/libonnxruntime.so")
	if !errors.Is(err, embed.ErrRuntimeUnavailable) {
		t.Fatalf("Init of a missing library: %v, want ErrRuntimeUnavailable", err)
	}
	if !strings.Contains(err.Error(), "make deps") || !strings.Contains(err.Error(), "/nonexistent/libonnxruntime.so") {
		t.Fatalf("error %q should name the path and how to install the library", err)
	}
}

func initRuntime(t *testing.T) string {
	t.Helper()
	version, err := embed.Init(testenv.Binary(t, testenv.EnvORTLib))
	if err != nil {
		t.Fatalf("onnx runtime: %v", err)
	}
	return version
}

// TestRuntimeRunsModel loads the real ONNX Runtime library and runs a tiny
// affine+ReLU model with a dynamic batch axis, checking its numbers.
func TestRuntimeRunsModel(t *testing.T) {
	version := initRuntime(t)
	if version != embed.ORTVersion {
		t.Errorf("loaded ONNX Runtime %s, want the pinned %s", version, embed.ORTVersion)
	}

	sess, err := ort.NewDynamicAdvancedSession(filepath.Join("testdata", "tiny_affine.onnx"),
		[]string{"x"}, []string{"y"}, nil)
	if err != nil {
		t.Fatalf("onnx runtime: open model: %v", err)
	}
	defer sess.Destroy()

	for _, tc := range []struct {
		x    []float32
		want []float32
	}{
		// y = relu(x @ W + b), W and b as in deploy/export/tiny_affine.py.
		{x: []float32{1, 2, 3, 4}, want: []float32{7.25, 0.5, 11}},
		{x: []float32{1, 2, 3, 4, -1, 0, 0, 0}, want: []float32{7.25, 0.5, 11, 0, 0, 2}},
	} {
		batch := int64(len(tc.x) / 4)
		in, err := ort.NewTensor(ort.NewShape(batch, 4), tc.x)
		if err != nil {
			t.Fatal(err)
		}
		outputs := []ort.Value{nil}
		if err := sess.Run([]ort.Value{in}, outputs); err != nil {
			t.Fatalf("onnx runtime: run with batch %d: %v", batch, err)
		}
		out := outputs[0].(*ort.Tensor[float32])
		if got := out.GetShape(); !got.Equals(ort.NewShape(batch, 3)) {
			t.Fatalf("output shape %v, want [%d 3]", got, batch)
		}
		for i, v := range out.GetData() {
			if math.Abs(float64(v-tc.want[i])) > 1e-6 {
				t.Fatalf("batch %d: y = %v, want %v", batch, out.GetData(), tc.want)
			}
		}
		in.Destroy()
		out.Destroy()
	}

	if _, err := embed.Init("/elsewhere/libonnxruntime.so"); err == nil {
		t.Fatal("Init with a second path succeeded; one process holds one runtime")
	}
}

// TestORTVersionMatchesInstaller keeps the Go constant and the installer's
// pin in step: the binary looks for the version that make deps installs.
func TestORTVersionMatchesInstaller(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "deploy/install/deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ORT_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("deploy/install/deps.sh has no ORT_VERSION= line")
	}
	if string(m[1]) != embed.ORTVersion {
		t.Fatalf("deps.sh pins ONNX Runtime %s, embed.ORTVersion is %s", m[1], embed.ORTVersion)
	}
}
