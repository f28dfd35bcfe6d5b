package main

import (
	"encoding/json"
	"fmt"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/deploy/bench/copydetect"
	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

// TestBenchCopyDetect runs `embedfleet bench copydetect` with the tiny models
// on generated references and edited copies.
func TestBenchCopyDetect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	refs, queries := filepath.Join(dir, "refs"), filepath.Join(dir, "queries")
	os.MkdirAll(refs, 0o755)
	os.MkdirAll(queries, 0o755)
	r := rand.New(rand.NewPCG(21, 21))
	truth := "query,reference\n"
	for i := range 16 {
		m := testimages.Photo(r, 150, 300)
		name := fmt.Sprintf("r%02d.jpg", i)
		os.WriteFile(filepath.Join(refs, name), testimages.JPEG(m, 90), 0o644)
		if i%2 == 0 {
			q := fmt.Sprintf("q%02d.jpg", i)
			os.WriteFile(filepath.Join(queries, q), testimages.JPEG(testimages.Scale(m, 0.7), 60), 0o644)
			truth += q + "," + name + "\n"
		}
	}
	for i := range 2 { // distractors
		q := fmt.Sprintf("d%02d.jpg", i)
		os.WriteFile(filepath.Join(queries, q), testimages.JPEG(testimages.Photo(r, 150, 300), 80), 0o644)
		truth += q + ",\n"
	}
	os.WriteFile(filepath.Join(dir, "truth.csv"), []byte(truth), 0o644)
	bg := filepath.Join(dir, "background") // unrelated to every reference and query
	os.MkdirAll(bg, 0o755)
	for i := range 8 {
		os.WriteFile(filepath.Join(bg, fmt.Sprintf("b%02d.jpg", i)), testimages.JPEG(testimages.Photo(r, 150, 300), 85), 0o644)
	}
	env := append(ortEnv(t, tinyModels(t)), "EMBEDFLEET_MILVUS_BIN="+testenv.Binary(t, testenv.EnvMilvusBin))
	out, err := runSplit(t, env, "bench", "copydetect", "--refs", refs, "--queries", queries, "--truth", filepath.Join(dir, "truth.csv"),
		"--models", "dinov2-base", "--background", bg, "--out", filepath.Join(dir, "out"))
	if err != nil || !strings.Contains(out, "embedfleet dinov2-base top1=") {
		t.Fatalf("bench copydetect: %v\n%s", err, out)
	}
	var rs []copydetect.Result
	b, _ := os.ReadFile(filepath.Join(dir, "out", "results.json"))
	if err := json.Unmarshal(b, &rs); err != nil || len(rs) != 1 {
		t.Fatalf("results.json: %v\n%s", err, b)
	}
	if r := rs[0]; r.Refs != 16 || r.Queries != 10 || r.Top1 < 0.75 || r.ImgPerSec <= 0 {
		t.Fatalf("result %+v: want 16 refs, 10 queries, resized copies found first", r)
	}
	// Normalised against the 8 background images: accuracy@1 cannot move
	// (one query's scores all shift alike); micro AP and the thresholds are
	// reported.
	if r := rs[0]; r.Background != 8 || r.MicroAPNorm == nil || r.RecallP90Norm == nil || r.Top1Norm == nil || *r.Top1Norm != r.Top1 ||
		*r.MicroAPNorm <= 0 || *r.MicroAPNorm > 1 || len(r.Thresholds) == 0 {
		t.Fatalf("normalised figures: %+v", r)
	}
	for _, want := range []string{"normalised dinov2-base background=8 micro_ap_raw=", "thresholds dinov2-base normalised p90="} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Every stage was timed, and a stage inside a phase cannot be slower
	// than the phase: its rate is at least the phase's rate. (prepare is
	// summed over goroutines, so it has no such bound.)
	res := rs[0]
	for stage, phase := range map[string]float64{"prepare": 0, "embed": res.IndexImgS, "upsert": res.IndexImgS, "query_embed": res.QueryImgS, "search": res.QueryImgS} {
		if v := res.Stages[stage]; v <= 0 || v < phase {
			t.Errorf("stage %s: %v img/s, its phase %v img/s", stage, v, phase)
		}
	}
	if !strings.Contains(out, "stages dinov2-base prepare_img_s=") {
		t.Errorf("no stages line:\n%s", out)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, "out", "results.md")); !strings.Contains(string(md), "| embedfleet | dinov2-base |") {
		t.Fatalf("results.md:\n%s", md)
	}
	f, err := os.Open(filepath.Join(dir, "out", "results.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cfg, err := png.DecodeConfig(f); err != nil || cfg.Width != 960 {
		t.Fatalf("results.png: %+v %v", cfg, err)
	}
}
