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

	// RecallP90 is the recall at 90% precision of the pooled predictions
	// (DISC21's third metric).
	RecallP90 float64 `json:"recall_p90"`
	// With a background set (bench copydetect --background): the same
	// figures with every score normalised (cosine less beta times the mean
	// cosine of the query's n nearest background images); accuracy@1 does
	// not change, as one query's scores all move by the same amount.
	Background    int      `json:"background,omitempty"`
	MicroAPNorm   *float64 `json:"micro_ap_norm,omitempty"`
	RecallP90Norm *float64 `json:"recall_p90_norm,omitempty"`
	Top1Norm      *float64 `json:"top1_norm,omitempty"`
	// Thresholds are the scores (normalised with a background, raw
	// without) at which the pooled predictions reach 90, 95 and 99%
	// precision, keyed "p90", "p95", "p99"; absent where that precision
	// is never reached.
	Thresholds map[string]float64 `json:"thresholds"`
}

// AtPrecision is the largest recall of the pooled predictions whose
// precision is at least p, with the lowest score accepted there (the
// threshold that gives it); ok is false when no cut reaches p.
func AtPrecision(truth map[string]string, results map[string][]Scored, p float64) (recall, threshold float64, ok bool) {
	preds, positives := pooledScored(truth, results)
	if positives == 0 {
		return 0, 0, false
	}
	found := 0
	for i, pr := range preds {
		if !pr.hit {
			continue
		}
		found++
		// Cut after a hit, and below every prediction of the same score.
		if i+1 < len(preds) && preds[i+1].score == pr.score {
			continue
		}
		if float64(found)/float64(i+1) >= p {
			recall, threshold, ok = float64(found)/float64(positives), pr.score, true
		}
	}
	return recall, threshold, ok
}

// Thresholds are AtPrecision's thresholds for 90, 95 and 99% precision.
func Thresholds(truth map[string]string, results map[string][]Scored) map[string]float64 {
	out := map[string]float64{}
	for _, p := range []struct {
		key string
		p   float64
	}{{"p90", 0.90}, {"p95", 0.95}, {"p99", 0.99}} {
		if _, th, ok := AtPrecision(truth, results, p.p); ok {
			out[p.key] = th
		}
	}
	return out
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

type pred struct {
	hit   bool
	score float64
}

// pooledScored is every (query, answer) prediction ranked by score, best
// first (ties: misses first, so no tie flatters a result), with whether it
// is the query's reference.
func pooledScored(truth map[string]string, results map[string][]Scored) (preds []pred, positives int) {
	qs := make([]string, 0, len(truth))
	for q := range truth {
		qs = append(qs, q)
	}
	sort.Strings(qs)
	for _, q := range qs {
		want := truth[q]
		if want != "" {
			positives++
		}
		for _, r := range results[q] {
			preds = append(preds, pred{want != "" && r.Ref == want, r.Score})
		}
	}
	sort.SliceStable(preds, func(i, j int) bool {
		if preds[i].score != preds[j].score {
			return preds[i].score > preds[j].score
		}
		return !preds[i].hit && preds[j].hit
	})
	return preds, positives
}

// pooled is pooledScored's hits alone.
func pooled(truth map[string]string, results map[string][]Scored) (hits []bool, positives int) {
	preds, positives := pooledScored(truth, results)
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

func thr(m map[string]float64, k string) string {
	if v, ok := m[k]; ok {
		return fmt.Sprintf("%.4f", v)
	}
	return "not reached"
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
	md.WriteString("| pipeline | model | accuracy@1 | top-3 | recall@10 | micro AP | recall@P90 | img/s | index img/s | query img/s |\n")
	md.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(&md, "| %s | %s | %.2f%% | %.2f%% | %.2f%% | %.4f | %.2f%% | %.2f | %.2f | %.2f |\n", r.Pipeline, r.Model,
			100*r.Top1, 100*r.Top3, 100*r.Recall10, r.MicroAP, 100*r.RecallP90, r.ImgPerSec, r.IndexImgS, r.QueryImgS)
	}
	for i, r := range rs {
		if r.MicroAPNorm == nil {
			continue
		}
		if i == 0 || rs[i-1].MicroAPNorm == nil {
			md.WriteString("\nWith score normalisation against the background set:\n\n")
			md.WriteString("| model | background | micro AP raw | normalised | recall@P90 raw | normalised | accuracy@1 |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		}
		fmt.Fprintf(&md, "| %s | %d | %.4f | %.4f | %.2f%% | %.2f%% | %.2f%% |\n", r.Model, r.Background, r.MicroAP, *r.MicroAPNorm,
			100*r.RecallP90, 100**r.RecallP90Norm, 100**r.Top1Norm)
	}
	md.WriteString("\nScore thresholds for a precision (normalised scores where there is a background set):\n\n| model | p90 | p95 | p99 |\n| --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(&md, "| %s | %s | %s | %s |\n", r.Model, thr(r.Thresholds, "p90"), thr(r.Thresholds, "p95"), thr(r.Thresholds, "p99"))
	}
	md.WriteString("\nImages per second of time spent in each stage (prepare = fetch, decode and preprocess, per goroutine; it runs on every core at once):\n\n")
	md.WriteString("| model | prepare | embed | upsert | query embed | search |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rs {
		fmt.Fprintf(&md, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", r.Model,
			r.Stages["prepare"], r.Stages["embed"], r.Stages["upsert"], r.Stages["query_embed"], r.Stages["search"])
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644)
}
