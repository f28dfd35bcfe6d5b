package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/embedfleet/embedfleet/shared/testenv"
	"github.com/embedfleet/embedfleet/shared/testimages"
)

// TestSecretsNeverLogged runs the pipeline against NATS with a user,
// a password and TLS, MinIO over TLS and Milvus over TLS, each with a CA given to embedfleet
// by flag or environment; wrong credentials or a missing CA fail fast with an
// error naming the server; and no secret appears in any log line, metric or
// help text.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	const natsPass = "nats-pass-7f3c1e9a"
	ca := testenv.NewCA(t)
	cert, key := ca.Issue(t, "nats")
	ns := testenv.StartNATSProcess(t, testenv.WithNATSAuth("ef-user", natsPass), testenv.WithNATSTLS(cert, key, ca.CertFile))
	m := testenv.StartMinIO(t, testenv.WithMinIOTLS(t, ca))
	mv := testenv.StartMilvus(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(12, 12))
	for i := range 12 {
		data := testimages.JPEG(testimages.Photo(r, 120, 200), 90)
		if _, err := m.Client.PutObject(ctx, m.Bucket, fmt.Sprintf("imgs/%02d.jpg", i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := l.Addr().String()
	l.Close()
	secrets := []string{natsPass, m.SecretKey}
	env := append(ortEnv(t, tinyModels(t)),
		"EMBEDFLEET_NATS_URL="+ns.URL, "EMBEDFLEET_NATS_USER=ef-user", "EMBEDFLEET_NATS_PASSWORD="+natsPass,
		"EMBEDFLEET_NATS_CA="+ca.CertFile, "EMBEDFLEET_PREFIX=SECURE", "EMBEDFLEET_MILVUS_ADDR="+mv.TLSFront(t, ca),
		"EMBEDFLEET_MILVUS_CA="+ca.CertFile,
		"EMBEDFLEET_S3_ENDPOINT="+m.Endpoint, "EMBEDFLEET_S3_CA="+ca.CertFile, "EMBEDFLEET_S3_PATH_STYLE=true",
		"AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey)
	source := "s3://" + m.Bucket + "/imgs/"

	w := execCommand("worker", "--models", "clip-vit-b32,dinov2-base", "--log-level", "debug", "--metrics-addr", metricsAddr)
	w.Env = append(os.Environ(), env...)
	var wout syncBuffer
	w.Stdout, w.Stderr = &wout, &wout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Process.Kill(); _ = w.Wait() }()

	var logs strings.Builder
	run := func(extraEnv []string, args ...string) (string, error) {
		cmd := execCommand(args...)
		cmd.Env = append(append(os.Environ(), env...), extraEnv...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if time.Since(start) > 30*time.Second {
			t.Errorf("%v took %s: a bad setting must fail fast, not hang", args, time.Since(start))
		}
		logs.Write(out)
		return string(out), err
	}
	out, err := run(nil, "coordinator", "run", "--source", source, "--models", "clip-vit-b32,dinov2-base", "--wait", "--timeout", "2m", "--log-level", "debug")
	if err != nil || !strings.Contains(out, "complete: 12 listed, 12 stored, 0 failed") {
		t.Fatalf("run over TLS with auth: %v\n%s\nworker:\n%s", err, out, wout.String())
	}
	if out, err := run(nil, "status"); err != nil || !strings.Contains(out, `"embedded":12`) {
		t.Fatalf("status: %v\n%s", err, out)
	}

	// Wrong or missing settings fail fast and name the server.
	for _, tc := range []struct {
		env  []string
		want []string
	}{
		{[]string{"EMBEDFLEET_NATS_PASSWORD=wrong"}, []string{"nats at " + ns.URL, "uthorization"}},
		{[]string{"EMBEDFLEET_NATS_CA="}, []string{"nats at " + ns.URL, "certificate"}},
		{[]string{"AWS_SECRET_ACCESS_KEY=wrong-secret"}, []string{"access denied", m.Bucket}},
		{[]string{"EMBEDFLEET_S3_CA="}, []string{"certificate", m.Endpoint}},
	} {
		out, err := run(tc.env, "coordinator", "run", "--source", source, "--models", "clip-vit-b32", "--timeout", "20s")
		if err == nil {
			t.Errorf("with %v the run succeeded:\n%s", tc.env, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("with %v: the error does not say %q:\n%s", tc.env, w, out)
			}
		}
	}

	// TestSecretsNeverLogged: logs, metrics and help texts.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, cmd := range [][]string{{"worker", "--help"}, {"coordinator", "run", "--help"}, {"verify", "--help"}, {"dev", "--help"}, {"query", "--help"}} {
		out, _ := run(nil, cmd...)
		logs.WriteString(out)
	}
	all := logs.String() + wout.String() + string(metrics)
	if !strings.Contains(wout.String(), "level=DEBUG") {
		t.Fatal("the worker wrote no debug log: the scan would prove little")
	}
	for _, s := range secrets {
		if strings.Contains(all, s) {
			i := strings.Index(all, s)
			t.Errorf("secret %q appears in output: ...%s...", s, all[max(0, i-80):min(len(all), i+40)])
		}
	}
	t.Logf("scanned %d bytes of logs, metrics and help text", len(all))
}
