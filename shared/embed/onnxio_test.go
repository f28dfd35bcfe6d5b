package embed

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

// TestGraphIOMatchesONNXRuntime: the inputs and outputs graphIO reads from
// the bytes are those the graph declares, as ONNX Runtime reports them
// (names, and shapes with -1 for symbolic dimensions), except where ONNX
// Runtime infers a dimension the graph leaves symbolic (DINOv2's hidden
// size: Open checks that on a real output); bytes that are not a model are
// an error, not a panic.
func TestGraphIOMatchesONNXRuntime(t *testing.T) {
	if _, err := Init(testenv.Binary(t, testenv.EnvORTLib)); err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join("testdata", "tiny_affine.onnx"),
		filepath.Join("testdata", "models", "clip-vit-b32", "model.onnx"),
		filepath.Join("testdata", "models", "dinov2-base", "model.onnx")}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		wantIn, wantOut, err := ort.GetInputOutputInfoWithONNXData(data)
		if err != nil {
			t.Fatal(err)
		}
		gotIn, gotOut, err := graphIO(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		strip := func(l []ort.InputOutputInfo) [][2]any {
			var out [][2]any
			for _, i := range l {
				out = append(out, [2]any{i.Name, []int64(i.Dimensions)})
			}
			return out
		}
		// Where the graph declares -1, ONNX Runtime may report an inferred size.
		for i := range gotOut {
			for j, d := range gotOut[i].Dimensions {
				if d == -1 && i < len(wantOut) && j < len(wantOut[i].Dimensions) {
					wantOut[i].Dimensions[j] = -1
				}
			}
		}
		if !reflect.DeepEqual(strip(gotIn), strip(wantIn)) || !reflect.DeepEqual(strip(gotOut), strip(wantOut)) {
			t.Errorf("%s: graphIO %v -> %v, ONNX Runtime %v -> %v", f, strip(gotIn), strip(gotOut), strip(wantIn), strip(wantOut))
		}
		t.Logf("%s: %v -> %v", filepath.Base(filepath.Dir(f)), strip(gotIn), strip(gotOut))
	}
	for _, bad := range [][]byte{nil, []byte("not a model"), {0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, _, err := graphIO(bad); err == nil {
			t.Errorf("graphIO(%q) gave no error", bad)
		}
	}
}
