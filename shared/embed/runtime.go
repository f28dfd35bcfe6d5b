package embed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ORTVersion is the ONNX Runtime release that `make deps` installs and that
// the onnxruntime_go binding is built against (C API 24). Newer libraries
// also serve that API.
const ORTVersion = "1.24.3"

// ErrRuntimeUnavailable is returned (wrapped) by Init when the ONNX Runtime
// library cannot be found or loaded.
var ErrRuntimeUnavailable = errors.New("onnx runtime unavailable")

// DefaultLibraryPaths are the places LibraryPath looks, in order, when no
// path is given: next to the binary (lib/ beside bin/, as in the container
// image) and the cache that `make deps` fills.
func DefaultLibraryPaths() []string {
	var paths []string
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		paths = append(paths,
			filepath.Join(dir, "libonnxruntime.so"),
			filepath.Join(dir, "..", "lib", "libonnxruntime.so"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		paths = append(paths, filepath.Join(home, ".cache", "embedfleet",
			"onnxruntime-"+ORTVersion, "lib", "libonnxruntime.so."+ORTVersion))
	}
	return paths
}

// ORTGPUVersion is the GPU build of ONNX Runtime that
// deploy/install/deps.sh gpu installs (Microsoft's onnxruntime-gpu wheel,
// for CUDA 13 and cuDNN 9); a test keeps the two equal.
const ORTGPUVersion = "1.31.1"

// GPULibraryPath is LibraryPath for --device cuda:N: explicit, else the
// GPU build deps.sh gpu installs, else the bare library name.
func GPULibraryPath(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "embedfleet", "onnxruntime-gpu-"+ORTGPUVersion, "lib", "libonnxruntime.so."+ORTGPUVersion)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "libonnxruntime.so"
}

// LibraryPath returns explicit when it is not empty, else the first of
// DefaultLibraryPaths that exists, else the bare library name so that the
// dynamic loader searches its usual places (LD_LIBRARY_PATH, ld.so.cache).
func LibraryPath(explicit string) string {
	if explicit != "" {
		return explicit
	}
	for _, p := range DefaultLibraryPaths() {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "libonnxruntime.so"
}

var (
	mu            sync.Mutex
	loadedPath    string
	loadedVersion string
)

// Init loads the ONNX Runtime shared library at path and initialises its
// environment. It returns the library's version. Once a library is loaded,
// later calls return its version, and fail if they name another path, since
// one process holds one runtime. A call that fails loads nothing, so a later
// call may try another path.
func Init(path string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if filepath.IsAbs(path) {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("%w: library %s: %v (run `make deps`, or pass --ort-lib / set EMBEDFLEET_ORT_LIB)", ErrRuntimeUnavailable, path, err)
		}
	}
	if loadedPath != "" {
		if path != loadedPath {
			return "", fmt.Errorf("%w: already loaded from %s, cannot load %s too", ErrRuntimeUnavailable, loadedPath, path)
		}
		return loadedVersion, nil
	}
	ort.SetSharedLibraryPath(path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return "", fmt.Errorf("%w: load %s: %v", ErrRuntimeUnavailable, path, err)
	}
	loadedPath, loadedVersion = path, ort.GetVersion()
	return loadedVersion, nil
}
