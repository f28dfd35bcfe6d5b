package copydetect

import (
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestMetrics(t *testing.T) {
	truth := map[string]string{"q1": "a", "q2": "b", "q3": "c", "q4": ""}
	results := map[string][]Scored{
		"q1": {{"a", 0.9}, {"b", 0.5}},             // top-1 hit
		"q2": {{"a", 0.8}, {"c", 0.4}, {"b", 0.3}}, // top-3 hit
		"q3": {{"a", 0.7}},                         // miss
		"q4": {{"a", 0.95}},                        // a distractor, confidently wrong
	}
	top1, top3, rec10, ap := Metrics(truth, results)
	// Pooled by score: q4a(x) q1a(hit 1/2) q2a(x) q3a(x) q1b(x) q2c(x) q2b(hit 2/7).
	want := (1.0/2 + 2.0/7) / 3
	if math.Abs(top1-1.0/3) > 1e-9 || math.Abs(top3-2.0/3) > 1e-9 || math.Abs(rec10-2.0/3) > 1e-9 || math.Abs(ap-want) > 1e-9 {
		t.Fatalf("top1 %v top3 %v recall10 %v micro AP %v; want 1/3, 2/3, 2/3, %v", top1, top3, rec10, ap, want)
	}
	rec, prec := PRCurve(truth, results)
	if len(rec) != 2 || math.Abs(rec[0]-1.0/3) > 1e-9 || math.Abs(prec[0]-0.5) > 1e-9 || math.Abs(rec[1]-2.0/3) > 1e-9 || math.Abs(prec[1]-2.0/7) > 1e-9 {
		t.Fatalf("PR curve %v %v", rec, prec)
	}
}

// TestWriteChart draws two models' curves and speeds into a PNG of the
// stated size whose two halves both hold ink.
func TestWriteChart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.png")
	rs := []Result{{Model: "clip-vit-b32", ImgPerSec: 62.5, MicroAP: 0.4}, {Model: "dinov2-base", ImgPerSec: 18.2, MicroAP: 0.7}}
	curves := []Curve{{Recall: []float64{0.1, 0.5, 0.9}, Precision: []float64{1, 0.8, 0.4}}, {Recall: []float64{0.2, 0.9}, Precision: []float64{1, 0.9}}}
	if err := WriteChart(path, rs, curves); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != ChartWidth || b.Dy() != ChartHeight {
		t.Fatalf("chart is %v, want %dx%d", b, ChartWidth, ChartHeight)
	}
	for half := range 2 {
		coloured := 0
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X + half*b.Dx()/2; x < b.Min.X+(half+1)*b.Dx()/2; x++ {
				r, g, bl, _ := img.At(x, y).RGBA()
				if !(r == g && g == bl) { // not white, grey or black: a curve or a bar
					coloured++
				}
			}
		}
		if coloured < 200 {
			t.Errorf("half %d of the chart has %d coloured pixels: no curve or bar drawn", half, coloured)
		}
	}
}

func TestAtPrecision(t *testing.T) {
	truth := map[string]string{"q1": "a", "q2": "b", "q3": "c", "q4": "", "q5": "e"}
	results := map[string][]Scored{
		"q1": {{"a", 0.9}},
		"q2": {{"b", 0.8}},
		"q3": {{"x", 0.7}},  // a miss
		"q4": {{"a", 0.75}}, // a distractor
		"q5": {{"e", 0.6}},
	}
	// Pooled: a(hit) b(hit) q4(x) q3(x) e(hit): precision 1, 1, 2/3, 1/2, 3/5.
	rec, th, ok := AtPrecision(truth, results, 0.9)
	if !ok || math.Abs(rec-2.0/4) > 1e-9 || th != 0.8 {
		t.Fatalf("at 90%%: recall %v threshold %v ok %v; want 0.5 at 0.8", rec, th, ok)
	}
	rec, th, ok = AtPrecision(truth, results, 0.6)
	if !ok || math.Abs(rec-3.0/4) > 1e-9 || th != 0.6 {
		t.Fatalf("at 60%%: recall %v threshold %v ok %v; want 0.75 at 0.6", rec, th, ok)
	}
	if _, _, ok := AtPrecision(truth, map[string][]Scored{"q4": {{"a", 1}}, "q1": {{"x", 0.9}}}, 0.5); ok {
		t.Fatal("a precision never reached was reported")
	}
	// A tie between a hit and a miss does not count the hit alone.
	tie := map[string][]Scored{"q1": {{"a", 0.5}}, "q4": {{"a", 0.5}}}
	if rec, _, ok := AtPrecision(truth, tie, 0.9); ok {
		t.Fatalf("a hit tied with a miss reached 90%% precision (recall %v)", rec)
	}
	got := Thresholds(truth, results)
	if got["p90"] != 0.8 || got["p95"] != 0.8 || got["p99"] != 0.8 {
		t.Fatalf("thresholds %v", got)
	}
}
