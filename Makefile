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

PYENV    = $$(deploy/install/pyenv.sh deploy/export/requirements.txt)/bin/python
BENCHDIR ?= ../shared/bench/bsds500

.PHONY: help deps build test lint fmt clean fixtures bench bench-embed

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install ONNX Runtime, milvus-lite, MinIO, nats-server, staticcheck into ~/.cache/embedfleet (pinned, sha256-checked, cached)
	$(DEPS) all

build: ## build bin/embedfleet (needs libjpeg-turbo: `deploy/install/deps.sh build`)
	$(DEPS) build
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/embedfleet ./cmd/embedfleet

test: deps lint ## deps, lint, every test with the race detector against real MinIO, NATS, Milvus and ONNX Runtime, a short fuzz
	$(DEPS_ENV); $(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -run '^$$' -fuzz FuzzDecodePreprocess -fuzztime 10s ./shared/imageprep

fixtures: ## regenerate the parity fixtures with the Hugging Face reference (installs the Python stack, several GB, once)
	$(PYENV) deploy/export/make_fixtures.py shared/imageprep/testdata
	cd deploy/export && $(PYENV) make_model_fixtures.py ../../shared/embed/testdata ../../shared/imageprep/testdata/images ../../../shared/seed

bench: bench-embed ## every benchmark

bench-embed: deps ## decode+preprocess img/s on one core, embedfleet against the Hugging Face processor (images: BENCHDIR, default ../shared/bench/bsds500)
	$(GO) build -o bin/prepbench ./deploy/bench/prepbench
	@for m in clip-vit-b32 dinov2-base; do \
	  e=$$(taskset -c 0 bin/prepbench --dir $(BENCHDIR) --model $$m | sed -n 's/.*img_s=\([0-9.]*\).*/\1/p'); \
	  r=$$(OMP_NUM_THREADS=1 $(PYENV) deploy/bench/hf_preprocess.py --dir $(BENCHDIR) --model $$m | sed -n 's/.*img_s=\([0-9.]*\).*/\1/p'); \
	  echo "preprocess $$m exact embedfleet_img_s=$$e reference_img_s=$$r speedup_x=$$(python3 -c "print(round($$e/$$r, 2))")"; \
	done

lint: deps ## gofmt, go vet and staticcheck (config: staticcheck.conf)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt -w needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(DEPS_ENV); "$$EMBEDFLEET_STATICCHECK_BIN" ./...

fmt: ## gofmt -w every Go file
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build outputs (not the ~/.cache/embedfleet downloads)
	rm -rf bin
