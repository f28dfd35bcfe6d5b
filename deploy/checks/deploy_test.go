package checks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/embedfleet/embedfleet/shared/testenv"
)

var (
	root   string
	binary string
)

func TestMain(m *testing.M) {
	var err error
	if root, err = testenv.RepoRoot(); err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "embedfleet-checks")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "embedfleet")
	build := exec.Command("go", "build", "-o", binary, "./cmd/embedfleet")
	build.Dir, build.Stderr = root, os.Stderr
	if err := build.Run(); err != nil {
		panic("build embedfleet: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rendered is the chart rendered with one values file, decoded strictly.
type rendered struct {
	deployments []appsv1.Deployment
	cronJobs    []batchv1.CronJob
	jobs        []batchv1.Job
	pdbs        []policyv1.PodDisruptionBudget
	secrets     []corev1.Secret
	services    []corev1.Service
	accounts    []corev1.ServiceAccount
	other       map[string][]map[string]any // CRDs: ScaledObject, ServiceMonitor
}

// deployment is the Deployment of one component (worker, query).
func (r rendered) deployment(t *testing.T, component string) appsv1.Deployment {
	t.Helper()
	for _, d := range r.deployments {
		if d.Labels["app.kubernetes.io/component"] == component {
			return d
		}
	}
	t.Fatalf("no %s Deployment among %d", component, len(r.deployments))
	return appsv1.Deployment{}
}

func strict(t *testing.T, doc []byte, into any) {
	t.Helper()
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		t.Fatalf("rendered object does not decode strictly into %T: %v\n%s", into, err, doc)
	}
}

func render(t *testing.T, values string) rendered {
	t.Helper()
	helm := testenv.Binary(t, testenv.EnvHelmBin)
	chart := filepath.Join(root, "helm", "embedfleet")
	lint := exec.Command(helm, "lint", "--strict", chart, "-f", filepath.Join(chart, "ci", values))
	if out, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("helm lint -f %s: %v\n%s", values, err, out)
	}
	out, err := exec.Command(helm, "template", "rel", chart, "-f", filepath.Join(chart, "ci", values)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errorsAs(err, &ee) {
			t.Fatalf("helm template -f %s: %v\n%s", values, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	r := rendered{other: map[string][]map[string]any{}}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		b := []byte(doc)
		switch head.Kind {
		case "Deployment":
			var o appsv1.Deployment
			strict(t, b, &o)
			r.deployments = append(r.deployments, o)
		case "CronJob":
			var o batchv1.CronJob
			strict(t, b, &o)
			r.cronJobs = append(r.cronJobs, o)
		case "Job":
			var o batchv1.Job
			strict(t, b, &o)
			r.jobs = append(r.jobs, o)
		case "PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			strict(t, b, &o)
			r.pdbs = append(r.pdbs, o)
		case "Secret":
			var o corev1.Secret
			strict(t, b, &o)
			r.secrets = append(r.secrets, o)
		case "Service":
			var o corev1.Service
			strict(t, b, &o)
			r.services = append(r.services, o)
		case "ServiceAccount":
			var o corev1.ServiceAccount
			strict(t, b, &o)
			r.accounts = append(r.accounts, o)
		case "ScaledObject", "ServiceMonitor":
			var o map[string]any
			if err := yaml.Unmarshal(b, &o); err != nil {
				t.Fatal(err)
			}
			r.other[head.Kind] = append(r.other[head.Kind], o)
		default:
			t.Fatalf("unexpected kind %q in the chart", head.Kind)
		}
	}
	return r
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

func secretRefs(c corev1.Container) map[string]string {
	refs := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			refs[e.Name] = e.ValueFrom.SecretKeyRef.Name
		}
	}
	return refs
}

func checkWorker(t *testing.T, d appsv1.Deployment) corev1.Container {
	t.Helper()
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("worker has %d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("worker probes: %+v %+v", c.LivenessProbe, c.ReadinessProbe)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("worker resources: %+v", c.Resources)
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("worker pod must run as non-root: %+v", psc)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("worker container security context: %+v", sc)
	}
	drain := 0
	for _, a := range c.Args {
		fmt.Sscanf(a, "--drain-timeout=%ds", &drain)
	}
	if spec.TerminationGracePeriodSeconds == nil || int(*spec.TerminationGracePeriodSeconds) <= drain || drain == 0 {
		t.Errorf("grace period %v must exceed the drain timeout %d s", spec.TerminationGracePeriodSeconds, drain)
	}
	return c
}

func TestChartCPU(t *testing.T) {
	r := render(t, "cpu-values.yaml")
	if len(r.deployments) != 2 || len(r.cronJobs) != 1 || len(r.jobs) != 0 || len(r.pdbs) != 1 || len(r.secrets) != 1 {
		t.Fatalf("rendered %d deployments, %d cronjobs, %d jobs, %d pdbs, %d secrets", len(r.deployments), len(r.cronJobs), len(r.jobs), len(r.pdbs), len(r.secrets))
	}
	c := checkWorker(t, r.deployment(t, "worker"))
	if refs := secretRefs(c); refs["AWS_ACCESS_KEY_ID"] != r.secrets[0].Name || refs["AWS_SECRET_ACCESS_KEY"] != r.secrets[0].Name {
		t.Errorf("worker S3 credentials come from %v, want the chart's secret %s", refs, r.secrets[0].Name)
	}
	if *r.deployment(t, "worker").Spec.Replicas != 2 {
		t.Errorf("replicas %d", *r.deployment(t, "worker").Spec.Replicas)
	}
	if n := len(r.deployment(t, "worker").Spec.Template.Spec.InitContainers); n != 1 {
		t.Errorf("%d init containers, want the models sync", n)
	}
	cj := r.cronJobs[0]
	if cj.Spec.Schedule != "0 2 * * *" || cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent ||
		*cj.Spec.SuccessfulJobsHistoryLimit != 3 || *cj.Spec.FailedJobsHistoryLimit != 3 {
		t.Errorf("cronjob: %+v", cj.Spec)
	}
	args := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--incremental") || !slices.Contains(args, "--source=s3://images/") {
		t.Errorf("coordinator args %v", args)
	}
	if _, ok := r.other["ScaledObject"]; ok {
		t.Error("a ScaledObject without keda.enabled")
	}
	checkQuery(t, r)
}

// checkQuery: the query server runs `serve` on the port its Service and
// probes name, with the models and the same hardened pod as the workers.
func checkQuery(t *testing.T, r rendered) {
	t.Helper()
	q := r.deployment(t, "query")
	spec := q.Spec.Template.Spec
	c := spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" || !slices.Contains(c.Args, "--listen=:8080") {
		t.Errorf("query args %v", c.Args)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("query ports %+v, probes %+v %+v", c.Ports, c.ReadinessProbe, c.LivenessProbe)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot ||
		c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("query pod security: %+v %+v", spec.SecurityContext, c.SecurityContext)
	}
	found := false
	for _, e := range c.Env {
		found = found || (e.Name == "EMBEDFLEET_MODELS" && e.Value == "clip-vit-b32,dinov2-base")
	}
	if !found {
		t.Errorf("query env has no EMBEDFLEET_MODELS: %+v", c.Env)
	}
	for _, svc := range r.services {
		if svc.Spec.Selector["app.kubernetes.io/component"] == "query" {
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.StrVal != "http" {
				t.Errorf("query service ports %+v", svc.Spec.Ports)
			}
			return
		}
	}
	t.Error("no Service for the query server")
}

func TestChartGPUWithKEDA(t *testing.T) {
	r := render(t, "gpu-keda-values.yaml")
	d := r.deployment(t, "worker")
	c := checkWorker(t, d)
	if q := c.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]; q.Value() != 1 {
		t.Errorf("GPU limit %v, want 1", c.Resources.Limits)
	}
	if !slices.Contains(c.Args, "--device=cuda:0") || !strings.HasSuffix(c.Image, "-gpu") {
		t.Errorf("GPU worker: image %s args %v", c.Image, c.Args)
	}
	if len(d.Spec.Template.Spec.Tolerations) != 1 || d.Spec.Template.Spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("GPU scheduling: %+v %+v", d.Spec.Template.Spec.Tolerations, d.Spec.Template.Spec.NodeSelector)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("with KEDA the Deployment must not pin replicas (got %d)", *d.Spec.Replicas)
	}
	so := r.other["ScaledObject"]
	if len(so) != 1 {
		t.Fatalf("%d ScaledObjects", len(so))
	}
	trig := so[0]["spec"].(map[string]any)["triggers"].([]any)[0].(map[string]any)
	meta := trig["metadata"].(map[string]any)
	if trig["type"] != "nats-jetstream" || meta["stream"] != "EMBEDFLEET_JOBS" || meta["consumer"] != "workers" {
		t.Errorf("KEDA trigger %+v", trig)
	}
	if len(r.other["ServiceMonitor"]) != 2 {
		t.Fatalf("%d ServiceMonitors with serviceMonitor.enabled, want the worker's and the query server's", len(r.other["ServiceMonitor"]))
	}
	// With a token, serve reads it from the Secret, and the ServiceMonitor
	// sends it: /metrics is behind it too.
	q := r.deployment(t, "query").Spec.Template.Spec
	if !slices.Contains(q.Containers[0].Args, "--consistency=bounded") || !slices.Contains(q.Containers[0].Args, "--search-ef=64") {
		t.Errorf("query search settings: args %v", q.Containers[0].Args)
	}
	if !slices.Contains(q.Containers[0].Args, "--auth-token-file=/var/run/embedfleet/token/token") ||
		!slices.ContainsFunc(q.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "query-token" }) {
		t.Errorf("query token: args %v volumes %+v", q.Containers[0].Args, q.Volumes)
	}
	sent := false
	for _, sm := range r.other["ServiceMonitor"] {
		for _, ep := range sm["spec"].(map[string]any)["endpoints"].([]any) {
			if a, ok := ep.(map[string]any)["authorization"].(map[string]any); ok && a["type"] == "Bearer" {
				cred := a["credentials"].(map[string]any)
				sent = cred["name"] == "query-token" && cred["key"] == "token"
			}
		}
	}
	if !sent {
		t.Errorf("the query ServiceMonitor does not send the token: %+v", r.other["ServiceMonitor"])
	}
}

func TestChartExistingSecrets(t *testing.T) {
	r := render(t, "existing-secrets-values.yaml")
	if len(r.secrets) != 0 {
		t.Fatalf("the chart made %d secrets though existing ones are named", len(r.secrets))
	}
	c := checkWorker(t, r.deployment(t, "worker"))
	refs := secretRefs(c)
	want := map[string]string{"AWS_ACCESS_KEY_ID": "my-s3", "AWS_SECRET_ACCESS_KEY": "my-s3", "EMBEDFLEET_NATS_USER": "my-nats",
		"EMBEDFLEET_NATS_TOKEN": "my-nats", "EMBEDFLEET_MILVUS_PASSWORD": "my-milvus", "EMBEDFLEET_MILVUS_TOKEN": "my-milvus"}
	for k, v := range want {
		if refs[k] != v {
			t.Errorf("%s comes from secret %q, want %q", k, refs[k], v)
		}
	}
	spec := r.deployment(t, "worker").Spec.Template.Spec
	if len(spec.InitContainers) != 0 || spec.Volumes[0].PersistentVolumeClaim == nil || spec.Volumes[0].PersistentVolumeClaim.ClaimName != "embedfleet-models" {
		t.Errorf("models from an existing claim: %+v, %d init containers", spec.Volumes[0], len(spec.InitContainers))
	}
	if len(r.jobs) != 1 || !slices.Contains(r.jobs[0].Spec.Template.Spec.Containers[0].Args, "--wait") {
		t.Errorf("one-shot job: %+v", r.jobs)
	}
}

// commandOf splits container args into the subcommand path and its flags.
func commandOf(args []string) (path []string, flags []string) {
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			name, _, _ := strings.Cut(a, "=")
			flags = append(flags, name)
		} else if len(flags) == 0 && !strings.Contains(a, "/") && !strings.Contains(a, ":") {
			path = append(path, a)
		}
	}
	return path, flags
}

func helpOf(t *testing.T, path []string) string {
	t.Helper()
	out, err := exec.Command(binary, append(path, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("embedfleet %s --help: %v\n%s", strings.Join(path, " "), err, out)
	}
	return string(out)
}

func checkCommand(t *testing.T, where string, args []string) {
	t.Helper()
	path, flags := commandOf(args)
	if len(path) == 0 {
		t.Fatalf("%s: no subcommand in %v", where, args)
	}
	help := helpOf(t, path)
	if !strings.Contains(help, "embedfleet "+strings.Join(path, " ")) {
		t.Fatalf("%s: `embedfleet %s` is not a command:\n%s", where, strings.Join(path, " "), help)
	}
	for _, f := range flags {
		if !strings.Contains(help, "  "+f+" ") && !strings.Contains(help, ", "+f+" ") {
			t.Errorf("%s: embedfleet %s has no flag %s", where, strings.Join(path, " "), f)
		}
	}
}

// TestChartCommandsExist runs `embedfleet <cmd> --help` for every command
// the chart gives a container and checks each flag it passes.
func TestChartCommandsExist(t *testing.T) {
	for _, v := range []string{"cpu-values.yaml", "gpu-keda-values.yaml", "existing-secrets-values.yaml"} {
		r := render(t, v)
		var pods []corev1.PodSpec
		for _, d := range r.deployments {
			pods = append(pods, d.Spec.Template.Spec)
		}
		for _, c := range r.cronJobs {
			pods = append(pods, c.Spec.JobTemplate.Spec.Template.Spec)
		}
		for _, j := range r.jobs {
			pods = append(pods, j.Spec.Template.Spec)
		}
		for _, p := range pods {
			for _, c := range append(p.InitContainers, p.Containers...) {
				checkCommand(t, v+"/"+c.Name, c.Args)
			}
		}
	}
}

func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithName("embedfleet"), cli.WithWorkingDirectory(root), cli.WithProfiles(profiles), cli.WithOsEnv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func TestCompose(t *testing.T) {
	p := loadCompose(t, "gpu", "run")
	for _, name := range []string{"nats", "minio", "minio-init", "milvus-etcd", "milvus-minio", "milvus", "models-sync", "worker", "worker-gpu", "query", "coordinator"} {
		if _, err := p.GetService(name); err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
	}
	for _, name := range []string{"nats", "minio", "milvus-etcd", "milvus-minio", "milvus"} {
		s, _ := p.GetService(name)
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		if name != "nats" && name != "minio" && name != "milvus" {
			continue
		}
		if len(s.Volumes) == 0 {
			t.Errorf("%s keeps its data in no volume", name)
		}
	}
	w, _ := p.GetService("worker")
	for dep, cond := range map[string]string{"nats": "service_healthy", "milvus": "service_healthy", "models-sync": "service_completed_successfully"} {
		if w.DependsOn[dep].Condition != cond {
			t.Errorf("worker depends on %s with %q, want %q", dep, w.DependsOn[dep].Condition, cond)
		}
	}
	g, _ := p.GetService("worker-gpu")
	if !slices.Contains(g.Profiles, "gpu") || g.Deploy == nil || len(g.Deploy.Resources.Reservations.Devices) != 1 ||
		!slices.Contains(g.Deploy.Resources.Reservations.Devices[0].Capabilities, "gpu") {
		t.Errorf("worker-gpu must reserve a GPU in the gpu profile: %+v", g.Deploy)
	}
	n, _ := p.GetService("nats")
	if c, ok := p.Configs["nats-conf"]; !ok || !strings.Contains(c.Content, "sync_interval: always") || len(n.Configs) != 1 {
		t.Errorf("nats must run JetStream with sync_interval: always")
	}
	m, _ := p.GetService("milvus")
	if len(m.Ports) == 0 || m.Ports[0].Target != 19530 {
		t.Errorf("milvus ports %+v", m.Ports)
	}
	for _, name := range []string{"models-sync", "worker", "worker-gpu", "query", "coordinator"} {
		s, _ := p.GetService(name)
		checkCommand(t, "docker-compose.yml/"+name, s.Command)
	}
	// Without profiles, `docker compose up` leaves the GPU worker and the
	// one-shot coordinator alone.
	plain := loadCompose(t)
	if _, err := plain.GetService("worker-gpu"); err == nil {
		t.Error("worker-gpu starts without the gpu profile")
	}
}
