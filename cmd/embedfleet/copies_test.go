package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/testimages"
)

// TestCopiesCLI: a bucket with an exact duplicate and an edited copy among
// unrelated photos, and a background folder of other photos. Through the
// binary: coordinator run, dedup --background (embedding the background
// through the workers), query --copies, serve's /v1/copies.
func TestCopiesCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 0)
	r := rand.New(rand.NewPCG(11, 12))
	put := func(key string, data []byte) {
		t.Helper()
		if _, err := c.minio.Client.PutObject(context.Background(), c.minio.Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var orig []byte
	var edited []byte
	for i := range 30 {
		m := testimages.Photo(r, 160, 320)
		b := testimages.JPEG(m, 90)
		put(fmt.Sprintf("imgs/%04d.jpg", i), b)
		switch i {
		case 3:
			orig = b
		case 5:
			put("imgs/edit-of-0005.jpg", testimages.JPEG(testimages.Scale(m, 0.8), 70))
			edited = testimages.JPEG(testimages.Scale(m, 0.6), 60) // never stored
		}
	}
	put("imgs/dup-of-0003.jpg", orig)
	for i := range 20 {
		put(fmt.Sprintf("bg/%02d.jpg", i), testimages.JPEG(testimages.Photo(r, 160, 320), 85))
	}
	c.startWorker(t)
	env := c.env(t)
	bin := func(args ...string) (string, string, error) {
		t.Helper()
		cmd := execCommand(args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	if out, errs, err := bin("coordinator", "run", "--source", c.source, "--models", "clip-vit-b32,dinov2-base", "--wait", "--timeout", "2m", "--job-size", "8"); err != nil ||
		!strings.Contains(out, "32 listed, 32 stored, 0 failed") {
		t.Fatalf("coordinator run: %v\n%s%s", err, out, errs)
	}

	// Before any background: raw cosines, said so.
	out, errs, err := bin("query", "--model", "dinov2-base", "--copies", "--uri", "s3://"+c.minio.Bucket+"/imgs/dup-of-0003.jpg", "--top-k", "3", "--json")
	if err != nil {
		t.Fatalf("query --copies: %v\n%s%s", err, out, errs)
	}
	var q struct {
		Normalised bool
		Matches    []struct {
			URI, Tier     string
			Cosine, Score float64
			Copy          bool
		}
	}
	if err := json.Unmarshal([]byte(out), &q); err != nil || q.Normalised || len(q.Matches) != 3 ||
		!strings.HasSuffix(q.Matches[0].URI, "/imgs/0003.jpg") || q.Matches[0].Tier != "exact" || !q.Matches[0].Copy || q.Matches[0].Score != q.Matches[0].Cosine {
		t.Fatalf("query --copies before a background set: %v %+v\n%s", err, q, out)
	}

	// dedup with a background embedded on the way.
	outDir := t.TempDir()
	out, errs, err = bin("dedup", "--model", "dinov2-base", "--background", "s3://"+c.minio.Bucket+"/bg/", "--out", outDir, "--k", "5", "--batch", "7")
	if err != nil {
		t.Fatalf("dedup: %v\n%s%s", err, out, errs)
	}
	for _, want := range []string{"embedding s3://" + c.minio.Bucket + "/bg/ as its background set", "20 listed, 20 stored", "dedup dinov2-base: 32/32 vectors"} {
		if !strings.Contains(errs, want) {
			t.Errorf("dedup's stderr lacks %q:\n%s", want, errs)
		}
	}
	if !strings.Contains(out, "dedup dinov2-base vectors=32 normalised=true pairs_exact=1 ") || !strings.Contains(out, "groups_exact=1 ") {
		t.Fatalf("dedup line: %s", out)
	}
	rows := readCSV(t, filepath.Join(outDir, "groups.csv"))
	var exact []string
	for _, r := range rows[1:] {
		if r[1] == "exact" {
			exact = append(exact, filepath.Base(r[3]))
		}
	}
	if strings.Join(exact, ",") != "0003.jpg,dup-of-0003.jpg" {
		t.Fatalf("exact group: %v", exact)
	}
	page, err := os.ReadFile(filepath.Join(outDir, "report.html"))
	if err != nil || !bytes.Contains(page, []byte("data:image/jpeg;base64,")) || !bytes.Contains(page, []byte("exact groups")) {
		t.Fatalf("report.html: %v, %d bytes, no thumbnails", err, len(page))
	}
	for _, f := range []string{"groups.jsonl", "summary.json"} {
		if st, err := os.Stat(filepath.Join(outDir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}

	// Now normalised: the edited copy's best match is its original, and at
	// a threshold just under that pair's score dedup groups the two.
	out, errs, err = bin("query", "--model", "dinov2-base", "--copies", "--uri", "s3://"+c.minio.Bucket+"/imgs/edit-of-0005.jpg", "--top-k", "3", "--json")
	if err != nil {
		t.Fatalf("query --copies: %v\n%s%s", err, out, errs)
	}
	if err := json.Unmarshal([]byte(out), &q); err != nil || !q.Normalised || !strings.HasSuffix(q.Matches[0].URI, "/imgs/0005.jpg") ||
		q.Matches[0].Score >= q.Matches[0].Cosine {
		t.Fatalf("query --copies of the edited copy: %v %+v\n%s", err, q, out)
	}
	th := strconv.FormatFloat(q.Matches[0].Score-1e-4, 'f', 6, 64)
	// A second dedup with the same --background embeds nothing again.
	out, errs, err = bin("dedup", "--model", "dinov2-base", "--background", "s3://"+c.minio.Bucket+"/bg/", "--out", outDir, "--threshold", th, "--thumbnails=false")
	if err != nil || !strings.Contains(errs, "new=0 changed=0 unchanged=20 deleted=0") {
		t.Fatalf("second dedup: %v\n%s%s", err, out, errs)
	}
	groups := map[string][]string{}
	for _, r := range readCSV(t, filepath.Join(outDir, "groups.csv"))[1:] {
		if r[1] == "copy" {
			groups[r[0]] = append(groups[r[0]], filepath.Base(r[3]))
		}
	}
	found := false
	for _, g := range groups {
		found = found || (strings.Contains(strings.Join(g, ","), "0005.jpg") && strings.Contains(strings.Join(g, ","), "edit-of-0005.jpg"))
	}
	if !found {
		t.Fatalf("copy groups at threshold %s: %v", th, groups)
	}

	// serve: /v1/copies by object and by upload.
	base, _ := startServe(t, env, "--models", "dinov2-base", "--text-models", "none")
	var resp struct {
		Normalised, Copy bool
		Matches          []struct {
			URI, Tier string
			Copy      bool
		}
	}
	getJSON := func(res *http.Response, err error) int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode == 200 {
			if err := json.Unmarshal(b, &resp); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
		} else {
			t.Logf("%d %s", res.StatusCode, b)
		}
		return res.StatusCode
	}
	code := getJSON(http.Get(base + "/v1/copies?model=dinov2-base&k=2&uri=s3://" + c.minio.Bucket + "/imgs/dup-of-0003.jpg"))
	if code != 200 || !resp.Normalised || !resp.Copy || resp.Matches[0].Tier != "exact" || !strings.HasSuffix(resp.Matches[0].URI, "/imgs/0003.jpg") {
		t.Fatalf("GET /v1/copies of the duplicate: %d %+v", code, resp)
	}
	code = getJSON(http.Post(base+"/v1/copies?model=dinov2-base&k=2", "image/jpeg", bytes.NewReader(orig)))
	if code != 200 || !resp.Copy || resp.Matches[0].Tier != "exact" || resp.Matches[1].Tier != "exact" {
		t.Fatalf("POST /v1/copies of stored bytes: %d %+v", code, resp)
	}
	code = getJSON(http.Post(base+"/v1/copies?model=dinov2-base&k=2", "image/jpeg", bytes.NewReader(edited)))
	if code != 200 || !strings.HasSuffix(resp.Matches[0].URI, "0005.jpg") || resp.Matches[0].Tier == "exact" {
		t.Fatalf("POST /v1/copies of a new edit: %d %+v", code, resp)
	}
	for _, c := range []struct {
		path string
		want int
	}{
		{"/v1/copies?model=dinov2-base", 400},
		{"/v1/copies?model=dinov2-base&uri=s3://nope/x.jpg", 404},
		{"/v1/copies?model=dinov2-base&id=zz", 404},
		{"/v1/copies?model=nope&id=zz", 404},
	} {
		if code := getJSON(http.Get(base + c.path)); code != c.want {
			t.Errorf("GET %s: %d, want %d", c.path, code, c.want)
		}
	}
	if code := getJSON(http.Post(base+"/v1/copies?model=dinov2-base", "image/jpeg", strings.NewReader("not an image"))); code != 415 && code != 422 {
		t.Errorf("POST /v1/copies of text: %d, want 415 or 422", code)
	}
}

func readCSV(t *testing.T, p string) [][]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) < 1 {
		t.Fatalf("%s: %v", p, err)
	}
	return rows
}

// TestDedupErrors: bad flags are refused before anything is read.
func TestDedupErrors(t *testing.T) {
	t.Parallel()
	env := ortEnv(t, tinyModels(t))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dedup", "--out", t.TempDir()}, "--model and --out are required"},
		{[]string{"dedup", "--model", "dinov2-base", "--out", t.TempDir(), "--k", "0"}, "--k must be 1 to 1000"},
		{[]string{"dedup", "--model", "dinov2-base", "--out", t.TempDir(), "--threshold", "7"}, "outside [-2, 2]"},
		{[]string{"dedup", "--model", "dinov2-base", "--out", t.TempDir(), "--background-n", "0"}, "background neighbours"},
		{[]string{"dedup", "--model", "dinov2-base", "--out", t.TempDir(), "--raw", "--background", "x"}, "contradict"},
		{[]string{"dedup", "--model", "dinov2-base", "--out", t.TempDir(), "--milvus-addr", "127.0.0.1:1"}, "milvus unavailable"},
		{[]string{"query", "--model", "clip-vit-b32", "--copies", "--text", "a cat"}, "a text is not a copy"},
		{[]string{"coordinator", "run", "--source", t.TempDir(), "--models", "dinov2-base", "--set", "Other"}, "the one set is background"},
	} {
		out, err := run(t, env, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v, want an error saying %q:\n%s", c.args, err, c.want, out)
		}
	}
}
