package stack

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MilvusServer is the real Milvus server, standalone (embedded etcd,
// rocksmq, local storage), as a child process: what users run, with real
// ANN indexes, consistency levels, aliases and rate limits, unlike
// milvus-lite.
type MilvusServer struct {
	Addr        string // host:port of the gRPC API
	MetricsAddr string // host:port of /healthz and /metrics
	*Process
	home, dir string
	ports     map[string]int
}

// milvusPorts are the template's port settings, each an instance's own;
// etcd_peer and metrics are not in the template (see writeConfig).
var milvusPorts = []string{"proxy_port", "proxy_internal_port", "etcd_port", "etcd_peer", "root_coord_port", "query_coord_port",
	"query_node_port", "index_coord_port", "index_node_port", "data_coord_port", "data_node_port", "metrics"}

// StartMilvusServer runs the server installed in home (deploy/install/deps.sh
// milvus-server: home/bin/milvus and home/template) with its data, config
// and logs in dir, every port a free loopback one, and returns once its
// /healthz says OK and it can create and drop a collection.
func StartMilvusServer(home, dir string) (*MilvusServer, error) {
	if _, err := os.Stat(filepath.Join(home, "bin", "milvus")); err != nil {
		return nil, fmt.Errorf("milvus server in %s: %v (deploy/install/deps.sh milvus-server installs it)", home, err)
	}
	var m *MilvusServer
	var err error
	for range 3 {
		m = &MilvusServer{home: home, dir: dir, ports: map[string]int{}}
		for _, name := range milvusPorts {
			if m.ports[name], err = FreePort(); err != nil {
				return nil, err
			}
		}
		if err = m.start(); err == nil || !strings.Contains(err.Error(), ErrPortTaken.Error()) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Restart starts the server again after it stopped, on the same ports and
// data, as an outage that ends would.
func (m *MilvusServer) Restart() error {
	if !m.Exited() {
		return fmt.Errorf("milvus server at %s: restart of a running server", m.Addr)
	}
	return m.start()
}

func (m *MilvusServer) start() error {
	if err := m.writeConfig(); err != nil {
		return err
	}
	m.Addr, m.MetricsAddr = HostPort(m.ports["proxy_port"]), HostPort(m.ports["metrics"])
	env := append(MilvusLiteEnv(nil, filepath.Join(m.home, "bin")), "MILVUSCONF="+filepath.Join(m.dir, "configs"),
		"DEPLOY_MODE=STANDALONE", "METRICS_PORT="+strconv.Itoa(m.ports["metrics"]), "MILVUS_RUN_DIR="+filepath.Join(m.dir, "run"))
	p, err := StartProcess("milvus-server", m.dir, env, filepath.Join(m.home, "bin", "milvus"), "run", "standalone")
	if err != nil {
		return err
	}
	health := &http.Client{Timeout: 2 * time.Second}
	ready := p.WaitReady(2*time.Minute, func() error {
		res, err := health.Get("http://" + m.MetricsAddr + "/healthz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", res.Status)
		}
		return probeMilvus(m.Addr, 10*time.Second)
	})
	if ready != nil {
		p.Kill()
		if PortTakenIn(p.LogTail(40)) {
			return fmt.Errorf("milvus server: %w", ErrPortTaken)
		}
		return fmt.Errorf("milvus server at %s: %w", m.Addr, ready)
	}
	m.Process = p
	return nil
}

// templateValue matches a setting of the server's config template:
// {{ name }}, {{ name: default }} or {{ name(type): default }}.
var templateValue = regexp.MustCompile(`\{\{\s*([a-z_]+)(?:\([a-z]+\))?\s*(?::\s*([^}]*?))?\s*\}\}`)

// writeConfig writes dir/configs: milvus.yaml from the template with this
// instance's ports and folders, every service bound to 127.0.0.1; etcd.yaml
// for the embedded etcd (whose client and peer ports the template leaves at
// 2379 and 2380); glog.conf.
func (m *MilvusServer) writeConfig() error {
	conf := filepath.Join(m.dir, "configs")
	data := filepath.Join(m.dir, "data")
	for _, d := range []string{conf, filepath.Join(data, "logs"), filepath.Join(m.dir, "run")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	tmpl, err := os.ReadFile(filepath.Join(m.home, "template", "config.yaml.template"))
	if err != nil {
		return fmt.Errorf("milvus server: %w (deploy/install/deps.sh milvus-server installs it)", err)
	}
	values := map[string]string{
		"etcd_data_dir":     filepath.Join(data, "etcd"),
		"local_storage_dir": filepath.Join(data, "storage"),
		"rocksmq_data_dir":  filepath.Join(data, "rocksmq"),
		"system_log_path":   filepath.Join(data, "logs"),
		"etcd_log_path":     filepath.Join(data, "logs", "etcd.log"),
		"etcd_log_level":    "warn",
	}
	for name, port := range m.ports {
		values[name] = strconv.Itoa(port)
	}
	var missing []string
	out := templateValue.ReplaceAllStringFunc(string(tmpl), func(s string) string {
		g := templateValue.FindStringSubmatch(s)
		if v, ok := values[g[1]]; ok {
			return v
		}
		if g[2] == "" {
			missing = append(missing, g[1])
		}
		return g[2]
	})
	if len(missing) > 0 {
		return fmt.Errorf("milvus server: the config template asks for %v, which the harness does not set", missing)
	}
	out = regexp.MustCompile(`(?m)^(\s+)ip:[ \t]*(#.*)?$`).ReplaceAllString(out, "${1}ip: 127.0.0.1")
	out = regexp.MustCompile(`(?m)^(    embed: true.*)$`).ReplaceAllString(out, "${1}\n  config:\n    path: "+filepath.Join(conf, "etcd.yaml"))
	etcd := fmt.Sprintf("name: default\ndata-dir: %s\nlisten-client-urls: http://%[2]s\nadvertise-client-urls: http://%[2]s\n"+
		"listen-peer-urls: http://%[3]s\ninitial-advertise-peer-urls: http://%[3]s\ninitial-cluster: default=http://%[3]s\n",
		filepath.Join(data, "etcd"), HostPort(m.ports["etcd_port"]), HostPort(m.ports["etcd_peer"]))
	glog, err := os.ReadFile(filepath.Join(m.home, "template", "glog.conf"))
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{"milvus.yaml": []byte(out), "etcd.yaml": []byte(etcd), "glog.conf": glog} {
		if err := os.WriteFile(filepath.Join(conf, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
