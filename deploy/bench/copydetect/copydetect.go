// Package copydetect scores a copy-detection benchmark the way the article
// does on DISC21 (accuracy@1 and top-3 accuracy, plus recall@10 and micro
// average precision over pooled predictions), writes the results as JSON and
// Markdown, and draws them: precision-recall curves and images/s bars.
// `embedfleet bench copydetect` runs the pipeline and hands its answers here.
package copydetect

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Result is one model's copy-detection figures.
type Result struct {
	Pipeline  string  `json:"pipeline"`
	Model     string  `json:"model"`
	Top1      float64 `json:"top1"`
	Top3      float64 `json:"top3"`
	Recall10  float64 `json:"recall10"`
	MicroAP   float64 `json:"micro_ap"`
	ImgPerSec float64 `json:"img_s"`
	IndexImgS float64 `json:"index_img_s"`
	QueryImgS float64 `json:"query_img_s"`
	// Stages: images per second of time spent in each stage. prepare
	// (fetch, decode, preprocess) is per goroutine: it runs on every core
	// at once. embed and upsert are the worker's model calls and Milvus
	// writes while indexing; query_embed and search are the query phase's.
	Stages  map[string]float64 `json:"stage_img_s"`
	Refs    int                `json:"refs"`
	Queries int                `json:"queries"`
}

// Scored is one answer to a query: a reference and its score, best first.
type Scored struct {
	Ref   string
	Score float64
}

// ReadTruth reads a query,reference CSV with a header; an empty reference
// marks a distractor (a query with no copy among the references).
func ReadTruth(p string) (map[string]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(rows) < 2 || len(rows[0]) != 2 {
		return nil, fmt.Errorf("%s: want a header and rows of query,reference", p)
	}
	t := map[string]string{}
	for _, r := range rows[1:] {
		t[r[0]] = r[1]
	}
	return t, nil
}

// pooled is every (query, answer) prediction ranked by score, best first,
// with whether it is the query's reference.
func pooled(truth map[string]string, results map[string][]Scored) (hits []bool, positives int) {
	type pred struct {
		hit   bool
		score float64
	}
	var preds []pred
	for q, want := range truth {
		if want != "" {
			positives++
		}
		for _, r := range results[q] {
			preds = append(preds, pred{want != "" && r.Ref == want, r.Score})
		}
	}
	sort.SliceStable(preds, func(i, j int) bool { return preds[i].score > preds[j].score })
	hits = make([]bool, len(preds))
	for i, p := range preds {
		hits[i] = p.hit
	}
	return hits, positives
}

// Metrics computes accuracy@1, top-3 accuracy and recall@10 over the
// queries that have a reference, and micro average precision over every
// (query, reference, score) prediction pooled and ranked by score.
func Metrics(truth map[string]string, results map[string][]Scored) (top1, top3, rec10, microAP float64) {
	for q, want := range truth {
		if want == "" {
			continue
		}
		for i, r := range results[q] {
			if r.Ref == want {
				if i == 0 {
					top1++
				}
				if i < 3 {
					top3++
				}
				rec10++
			}
		}
	}
	hits, positives := pooled(truth, results)
	if positives == 0 {
		return 0, 0, 0, 0
	}
	found := 0
	for i, h := range hits {
		if h {
			found++
			microAP += float64(found) / float64(i+1)
		}
	}
	n := float64(positives)
	return top1 / n, top3 / n, rec10 / n, microAP / n
}

// PRCurve is the precision-recall curve of the pooled predictions: one
// point per correct prediction.
func PRCurve(truth map[string]string, results map[string][]Scored) (recall, precision []float64) {
	hits, positives := pooled(truth, results)
	if positives == 0 {
		return nil, nil
	}
	found := 0
	for i, h := range hits {
		if h {
			found++
			recall = append(recall, float64(found)/float64(positives))
			precision = append(precision, float64(found)/float64(i+1))
		}
	}
	return recall, precision
}

// WriteResults writes results.json and results.md into dir.
func WriteResults(dir string, rs []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rs, "", " ")
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	md.WriteString("| pipeline | model | accuracy@1 | top-3 | recall@10 | micro AP | img/s | index img/s | query img/s |\n")
	md.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(&md, "| %s | %s | %.2f%% | %.2f%% | %.2f%% | %.4f | %.2f | %.2f | %.2f |\n", r.Pipeline, r.Model,
			100*r.Top1, 100*r.Top3, 100*r.Recall10, r.MicroAP, r.ImgPerSec, r.IndexImgS, r.QueryImgS)
	}
	md.WriteString("\nImages per second of time spent in each stage (prepare = fetch, decode and preprocess, per goroutine; it runs on every core at once):\n\n")
	md.WriteString("| model | prepare | embed | upsert | query embed | search |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(&md, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", r.Model,
			r.Stages["prepare"], r.Stages["embed"], r.Stages["upsert"], r.Stages["query_embed"], r.Stages["search"])
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644)
}
