// Package checks validates the deployment files without a cluster or a
// Docker engine: the Helm chart (helm lint, helm template over several
// values files, every rendered object decoded strictly into the Kubernetes
// API types) and docker-compose.yml (the compose-spec loader), and that
// every command and flag they give the binary exists.
package checks
