# embedfleet: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
DEPS    := deploy/install/deps.sh
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Paths of what deps.sh installs (EMBEDFLEET_ORT_LIB, ..._MINIO_BIN, ...).
DEPS_ENV = eval "$$($(DEPS) --env)"

.PHONY: help deps build test lint fmt clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## install ONNX Runtime, milvus-lite, MinIO, nats-server, staticcheck into ~/.cache/embedfleet (pinned, sha256-checked, cached)
	$(DEPS) all

build: ## build bin/embedfleet (needs libjpeg-turbo: `deploy/install/deps.sh build`)
	$(DEPS) build
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/embedfleet ./cmd/embedfleet

test: deps lint ## deps, lint, then every test with the race detector against real MinIO, NATS, Milvus and ONNX Runtime
	$(DEPS_ENV); $(GO) test -race -count=1 -timeout 20m ./...

lint: deps ## gofmt, go vet and staticcheck (config: staticcheck.conf)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt -w needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(DEPS_ENV); "$$EMBEDFLEET_STATICCHECK_BIN" ./...

fmt: ## gofmt -w every Go file
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build outputs (not the ~/.cache/embedfleet downloads)
	rm -rf bin
