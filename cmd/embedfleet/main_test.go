package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/testenv"
)

var binPath string

// TestMain builds the real binary once; the tests run it as a user would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "embedfleet-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "embedfleet")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9-test -X main.commit=abc1234", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building embedfleet: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestVersion(t *testing.T) {
	lib := testenv.Binary(t, testenv.EnvORTLib)
	out, err := run(t, []string{"EMBEDFLEET_ORT_LIB=" + lib}, "version")
	if err != nil {
		t.Fatalf("embedfleet version: %v\n%s", err, out)
	}
	for _, want := range []string{"v9.9.9-test", "abc1234", "go1.", "onnxruntime  " + embed.ORTVersion + " (" + lib + ")"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

func TestVersionFlagOverridesEnv(t *testing.T) {
	lib := testenv.Binary(t, testenv.EnvORTLib)
	out, err := run(t, []string{"EMBEDFLEET_ORT_LIB=" + lib}, "version", "--ort-lib", "/nonexistent/libonnxruntime.so")
	if err != nil {
		t.Fatalf("embedfleet version with a missing library should still succeed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "onnxruntime  not loaded:") || !strings.Contains(out, "/nonexistent/libonnxruntime.so") ||
		!strings.Contains(out, "make deps") {
		t.Fatalf("version with a missing library should say so, name the path and the fix:\n%s", out)
	}
}

func TestHelpListsOnlyWorkingCommands(t *testing.T) {
	out, err := run(t, nil, "--help")
	if err != nil {
		t.Fatalf("embedfleet --help: %v\n%s", err, out)
	}
	for _, c := range []string{"version", "models", "similarity", "embed", "coordinator", "worker", "query", "serve", "dev", "status", "verify", "bench", "--device", "--ort-lib", "--models-dir"} {
		if !strings.Contains(out, c) {
			t.Fatalf("help lacks %s:\n%s", c, out)
		}
	}
}

func TestUnknownCommandFails(t *testing.T) {
	out, err := run(t, nil, "frobnicate")
	if err == nil {
		t.Fatalf("embedfleet frobnicate succeeded:\n%s", out)
	}
	if !strings.Contains(out, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command error should name it:\n%s", out)
	}
}

func execCommand(args ...string) *exec.Cmd { return exec.Command(binPath, args...) }
