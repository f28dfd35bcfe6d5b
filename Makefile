# embedfleet: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
# Go 1.26.10 fixes standard-library vulnerabilities that govulncheck reports
# in 1.26.8; the go command fetches it from the module proxy once.
export GOTOOLCHAIN := go1.26.10
DEPS    := deploy/install/deps.sh
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Paths of what deps.sh installs (EMBEDFLEET_ORT_LIB, ..._MINIO_BIN, ...).
DEPS_ENV = eval "$$($(DEPS) --env)"

PYENV    = $$(deploy/install/pyenv.sh deploy/export/requirements.txt)/bin/python
BENCHDIR ?= ../shared/bench/bsds500
# models-random-4: the int8 image towers quantise the fused graph (its
# attention becomes com.microsoft.QAttention); -3 quantised the plain one.
# Since -3 the fp32 image towers have their attention fused into
# com.microsoft.Attention (deploy/export/fuse_attention.py). Since -2 CLIP's
# towers come from one CLIPModel.
RANDOM_MODELS = $${EMBEDFLEET_CACHE:-$$HOME/.cache/embedfleet}/models-random-4

DEMO_DIR    ?= bin/demo
DEMO_MODELS ?= shared/embed/testdata/models

.PHONY: help deps deps-demo deps-gpu gpu-check-dry-run build test test-short lint fmt clean fixtures random-models parity decode-diff bench bench-embed bench-pipeline bench-paced bench-manifest bench-article bench-hostile bench-text bench-decode bench-int8 int8-models bench-copies bench-dedup soak demo

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: deps-demo build ## index 200 generated images with the whole system in one process (NATS, milvus-lite, coordinator, workers), then query by image and by text
	$(GO) run ./deploy/demo/genimages --out $(DEMO_DIR) --n 200
	@if [ "$(DEMO_MODELS)" = shared/embed/testdata/models ]; then \
	  echo "=================================================================="; \
	  echo " DEMO MODELS ARE TINY RANDOM-INIT CLIP AND DINOv2 (test fixtures):"; \
	  echo " the pipeline is real, the similarity scores are meaningless."; \
	  echo " Real weights: docs/models.md, then DEMO_MODELS=~/.cache/embedfleet/models"; \
	  echo "=================================================================="; fi
	$(DEPS_ENV); bin/embedfleet dev --models-dir $(DEMO_MODELS) --models clip-vit-b32,dinov2-base \
	  --images $(DEMO_DIR)/images --query $(DEMO_DIR)/query.jpg --query-text "a photo of a red circle" --top-k 3 --job-size 32

deps-demo: ## install only what `make demo` needs: libjpeg-turbo, ONNX Runtime, CLIP's vocabulary, milvus-lite
	$(DEPS) demo

gpu-check-dry-run: deps ## rehearse deploy/bench/gpu-check.sh (the H200 measurement) on this CPU machine: pack, parts and checksums, the run stage with --device cpu
	deploy/bench/gpu-check.sh --dry-run bin/gpu-dry-run

deps-gpu: ## install ONNX Runtime's GPU build (Microsoft's onnxruntime-gpu 1.31.1 wheel, CUDA 13) for --device cuda:N
	$(DEPS) gpu

deps: ## install ONNX Runtime, milvus-lite, the Milvus server, MinIO, nats-server, staticcheck into ~/.cache/embedfleet (pinned, sha256-checked, cached)
	$(DEPS) all

build: ## build bin/embedfleet (needs libjpeg-turbo: `deploy/install/deps.sh build`)
	$(DEPS) build
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/embedfleet ./cmd/embedfleet

# The fuzz step runs a count of inputs, not a time: a -fuzztime duration races
# Go's fuzzing coordinator at its deadline and now and then fails with a bare
# "context deadline exceeded" and no crasher. It skips minimizing each new
# interesting input: minimizing a 100 KB photo can take the whole budget. A
# crasher is still saved, whole, under testdata/fuzz. 200,000 inputs take
# about 10 s on the 2-core dev machine; -timeout bounds a hang.
# The Milvus packages run twice: on milvus-lite (the embedded default, with
# everything else) and on the real Milvus server (standalone 2.3.5), which
# has what milvus-lite hides: index errors, ANN search parameters,
# consistency levels, aliases, rate limits. The command, serve and page
# tests run on milvus-lite only: they exercise the same store code through
# more layers, at twice the time; of the worker's, those that depend on
# Milvus's behaviour (writes, outages, versions, verify, dropped
# collections) run on both, the ones about decoding, batching and listing
# on milvus-lite only. The race detector runs on the first pass (the code is
# the same; the server pass checks the server's behaviour).
MILVUS_SERVER_PKGS = ./shared/vecstore ./shared/search ./shared/copies
MILVUS_SERVER_WORKER_TESTS = TestPipelineEndToEnd|TestMilvusOutage|TestIncrementalModelUpgrade|TestVerifyAndRepair|TestBackgroundSetAndContentHash|TestCollectionDroppedMidRun|TestVerifyUnscanned

test: deps lint ## deps, lint, every test with the race detector against real MinIO, NATS, Milvus (milvus-lite, and the Milvus packages on the real server too) and ONNX Runtime, a short fuzz
	$(DEPS_ENV); $(GO) test -race -count=1 -timeout 20m ./...
	$(DEPS_ENV); EMBEDFLEET_TEST_MILVUS=server $(GO) test -count=1 -timeout 20m $(MILVUS_SERVER_PKGS)
	$(DEPS_ENV); EMBEDFLEET_TEST_MILVUS=server $(GO) test -count=1 -timeout 20m -run '^($(MILVUS_SERVER_WORKER_TESTS))$$' ./worker
	$(GO) test -run '^$$' -timeout 5m -fuzz FuzzDecodePreprocess -fuzztime 200000x -fuzzminimizetime 1x ./shared/imageprep
	$(DEPS_ENV); $(GO) test -run '^$$' -timeout 5m -fuzz FuzzEncode -fuzztime 100000x -fuzzminimizetime 1x ./shared/cliptok
	$(GO) test -run '^$$' -timeout 5m -fuzz FuzzTerminal -fuzztime 100000x -fuzzminimizetime 1x ./shared/escape

test-short: ## the fast layer: every test that needs no server or native library (go test -short), about 20 s
	$(GO) test -short -count=1 ./...

fixtures: ## regenerate the parity fixtures with the Hugging Face reference (installs the Python stack, several GB, once)
	$(PYENV) deploy/export/make_fixtures.py shared/imageprep/testdata
	$(DEPS) clip-vocab
	$(DEPS_ENV); $(PYENV) deploy/export/make_tokenizer_fixtures.py "$$EMBEDFLEET_CLIP_VOCAB" shared/cliptok/testdata/parity.json
	$(DEPS_ENV); py=$(PYENV); cd deploy/export && $$py make_model_fixtures.py ../../shared/embed/testdata ../../shared/imageprep/testdata/images ../../../shared/seed "$$EMBEDFLEET_CLIP_VOCAB"

random-models: ## export full-size random-init clip-vit-b32, its text tower and dinov2-base (seed 0) into ~/.cache/embedfleet/models-random-4, once
	$(DEPS) clip-vocab
	@$(DEPS_ENV); py=$(PYENV); cd deploy/export && for m in clip-vit-b32 dinov2-base; do \
	  [ -f "$(RANDOM_MODELS)/$$m/spec.json" ] || $$py export.py --model $$m --random-init --seed 0 --out "$(RANDOM_MODELS)/$$m"; done; \
	[ -f "$(RANDOM_MODELS)/clip-vit-b32-text/spec.json" ] || $$py export.py --model clip-vit-b32-text --random-init --seed 0 \
	  --pairs-with "$(RANDOM_MODELS)/clip-vit-b32" --out "$(RANDOM_MODELS)/clip-vit-b32-text"

parity: deps build random-models ## full-size random-init CLIP (both towers) and DINOv2: embedfleet against the article's PyTorch pipeline on BENCHDIR (parity, similarity, text_top10_same lines)
	$(DEPS_ENV); py=$(PYENV); cd deploy/export && $$py parity.py --bin ../../bin/embedfleet --images ../../$(BENCHDIR) \
	  --seed-images ../../../shared/seed --models "$(RANDOM_MODELS)"

# The fuzzer's own corpus (what it found interesting), when this machine has one.
FUZZ_CORPUS = $$($(GO) env GOCACHE)/fuzz/github.com/embedfleet/embedfleet/shared/imageprep/FuzzDecodePreprocess

decode-diff: deps ## decode format variants, the fixtures, the fuzz corpora and BENCHDIR with embedfleet and with Pillow; fails on any image they decode differently
	rm -rf bin/decode-diff bin/decode-variants
	$(PYENV) deploy/export/make_variants.py bin/decode-variants
	$(DEPS_ENV); inputs="bin/decode-variants shared/imageprep/testdata/images shared/imageprep/testdata/fuzz"; \
	  for d in "$(FUZZ_CORPUS)" "$(BENCHDIR)"; do if [ -d "$$d" ]; then inputs="$$inputs $$d"; fi; done; \
	  $(GO) run ./deploy/export/decodediff --out bin/decode-diff $$inputs
	$(PYENV) deploy/export/decode_diff.py bin/decode-diff

BENCH_REFS ?= 400
BENCH_QUERIES ?= 200
BENCH_DISTRACTORS ?= 50
BENCH_OUT ?= bin/bench-article
BENCHPY = $$(deploy/install/pyenv.sh deploy/bench/requirements.txt)/bin/python

bench-article: deps build random-models int8-models ## copy detection on BSDS500 queries made with AugLy: the article's pipeline (1 image at a time, and batch 32) against embedfleet (fp32, and int8), same weights
	@py=$(BENCHPY); rm -rf $(BENCH_OUT); mkdir -p $(BENCH_OUT); \
	$$py deploy/bench/make_queries.py --images $(BENCHDIR) --out $(BENCH_OUT)/data --refs $(BENCH_REFS) --queries $(BENCH_QUERIES) --distractors $(BENCH_DISTRACTORS); \
	$(DEPS_ENV); PY=$$py BIN=bin/embedfleet MODELS="$(RANDOM_MODELS)" deploy/bench/article.sh $(BENCH_OUT)/data $(BENCH_OUT)

bench: bench-embed bench-decode bench-int8 bench-pipeline bench-manifest bench-article bench-hostile bench-text bench-copies bench-dedup ## every benchmark

FULLSIZE_DIR ?= bin/fullsize

bench-decode: deps ## decode + preprocess on one core, full-size photos (12 MP and 3 MP, made from BENCHDIR): exact against --decode fast, with their tensors' and vectors' cosine
	$(GO) run ./deploy/bench/fullsize --src $(BENCHDIR) --out $(FULLSIZE_DIR) --n 60
	$(GO) build -o bin/prepbench ./deploy/bench/prepbench
	@for s in 4000x3000 2000x1500; do for m in clip-vit-b32 dinov2-base; do \
	  taskset -c 0 bin/prepbench --compare --rounds 2 --dir $(FULLSIZE_DIR)/$$s --model $$m; done; done
	@for m in clip-vit-b32 dinov2-base; do taskset -c 0 bin/prepbench --compare --rounds 3 --dir $(BENCHDIR) --model $$m; done
	$(MAKE) -s build random-models
	@$(DEPS_ENV); $(PYENV) deploy/bench/decode_agree.py --bin bin/embedfleet --images $(FULLSIZE_DIR)/4000x3000 --models "$(RANDOM_MODELS)"

int8-models: deps random-models ## the int8 quantisations of the full-size random-init models (export.py --int8, once)
	@py=$(PYENV); cd deploy/export && for m in clip-vit-b32 dinov2-base; do \
	  [ -f "$(RANDOM_MODELS)/$$m-int8/spec.json" ] || $$py export.py --model $$m --random-init --seed 0 --int8 \
	    --calib-images ../../$(BENCHDIR) --out "$(RANDOM_MODELS)/$$m-int8"; done

bench-int8: deps build int8-models ## int8 against fp32: inference img/s by batch, agreement and copy-detection top-1 on edited BSDS500 copies
	$(GO) build -o bin/inferbench ./deploy/bench/inferbench
	@$(DEPS_ENV); for m in clip-vit-b32 clip-vit-b32-int8 dinov2-base dinov2-base-int8; do \
	  bin/inferbench --model "$(RANDOM_MODELS)/$$m" --batches 1,8,32 --seconds 8 --threads $$(nproc); done
	@$(DEPS_ENV); $(PYENV) deploy/bench/int8_agree.py --bin bin/embedfleet --images $(BENCHDIR) --models "$(RANDOM_MODELS)"

bench-text: deps random-models ## CLIP's tokenizer (ns per text), and 32 concurrent text queries through the engine with the full-size text tower at batch 1, 8 and 32 (texts/s)
	$(DEPS_ENV); $(GO) test -run '^$$' -bench Encode -benchtime 20000x ./shared/cliptok | grep -E '^Benchmark'
	$(DEPS_ENV); $(GO) test -run '^$$' -bench TextQueries -benchtime 5x -timeout 10m ./shared/engine | grep -E '^Benchmark'


bench-hostile: deps build ## what hostile input costs: progressive-JPEG scans by size and count, refusing a 20,000-scan file; serve's RSS under 200 concurrent 9400x9400 uploads
	$(GO) test -run '^$$' -bench ScanBomb -benchtime 3x ./shared/imageprep | grep -E '^Benchmark'
	$(DEPS_ENV); $(GO) test -run '^$$' -bench ServeMemory -benchtime 1x -timeout 10m ./cmd/embedfleet | grep -E '^Benchmark'


COPIES_OUT ?= bin/bench-copies

bench-copies: deps build random-models ## copy detection with score normalisation: BSDS500 split into references, background and distractor sources (AugLy queries); micro AP and recall at 90% precision raw and normalised, thresholds for 90/95/99% precision
	@py=$(BENCHPY); rm -rf $(COPIES_OUT); mkdir -p $(COPIES_OUT); \
	$$py deploy/bench/make_queries.py --images $(BENCHDIR) --out $(COPIES_OUT)/data --refs 300 --queries 150 --distractors 50 --background 150
	@$(DEPS_ENV); bin/embedfleet --models-dir "$(RANDOM_MODELS)" bench copydetect --refs $(COPIES_OUT)/data/refs --queries $(COPIES_OUT)/data/queries \
	  --truth $(COPIES_OUT)/data/truth.csv --background $(COPIES_OUT)/data/background --models clip-vit-b32,dinov2-base --out $(COPIES_OUT)/results

DEDUP_SIZES ?= 25000,50000,100000

bench-dedup: deps build ## embedfleet dedup over 25k, 50k and 100k synthetic 512-d vectors with planted copies and exact duplicates: wall time, vectors/s, peak RSS, pair recall and precision
	@$(DEPS_ENV); $(GO) run ./deploy/bench/dedupscale --sizes $(DEDUP_SIZES) --bin bin/embedfleet | grep -E '^dedup'

SOAK_OBJECTS ?= 1000000
# SOAK_TMPDIR=/dev/shm keeps the servers' data in memory (about 5 GB per
# million objects), off a slow disk.
SOAK_TMPDIR ?=

soak: deps build ## the whole system as separate processes on SOAK_OBJECTS objects (default 1,000,000) with workers, nats-server and milvus-lite killed mid-run; verify, exact row counts, an incremental run, RSS
	@mkdir -p bin $(SOAK_TMPDIR); $(DEPS_ENV); set -o pipefail; $(if $(SOAK_TMPDIR),TMPDIR=$(SOAK_TMPDIR)) SOAK_OBJECTS=$(SOAK_OBJECTS) $(GO) test -run '^$$' -bench Soak -benchtime 1x -timeout 180m ./deploy/bench/soak 2>&1 | \
	  tee bin/soak.log | grep -E '^(soak|--- FAIL|FAIL|ok|    )'; echo "full log: bin/soak.log"

bench-manifest: ## streaming diff of two sorted listings (1% changed/added/deleted) at 1M and 5M keys: keys/s and peak RSS
	@for n in 1000000 5000000; do BENCH_KEYS=$$n $(GO) test -run '^$$' -bench . -benchtime 1x ./deploy/bench/manifest | grep '^manifest '; done

bench-pipeline: deps build random-models bench-paced ## coordinator publishing vs raw listing (100k objects), worker end to end vs inference alone, Milvus upserts
	$(DEPS_ENV); $(GO) test -run '^$$' -bench 'Coordinator|MilvusUpsert|Worker$$' -benchtime 1x -timeout 30m ./deploy/bench/pipeline | grep -E '^(coordinator|worker|milvus) '

bench-paced: deps ## a worker whose model takes 80 ms per batch of 32 (GPU-like): share of the engine's time kept busy, Milvus 0, 20 and 50 ms away
	@$(DEPS_ENV); for d in 0 10 25; do \
	  BENCH_MILVUS_DELAY_MS=$$d $(GO) test -run '^$$' -bench WorkerPaced -benchtime 1x ./deploy/bench/pipeline | grep '^worker_paced '; done


bench-embed: deps build random-models ## preprocess img/s on one core against the HF processor; inference img/s by batch; end-to-end embed img/s (images: BENCHDIR)
	$(GO) build -o bin/prepbench ./deploy/bench/prepbench
	$(GO) build -o bin/inferbench ./deploy/bench/inferbench
	@for m in clip-vit-b32 dinov2-base; do \
	  e=$$(taskset -c 0 bin/prepbench --dir $(BENCHDIR) --model $$m | sed -n 's/.*img_s=\([0-9.]*\).*/\1/p'); \
	  r=$$(OMP_NUM_THREADS=1 $(PYENV) deploy/bench/hf_preprocess.py --dir $(BENCHDIR) --model $$m | sed -n 's/.*img_s=\([0-9.]*\).*/\1/p'); \
	  echo "preprocess $$m exact embedfleet_img_s=$$e reference_img_s=$$r speedup_x=$$(python3 -c "print(round($$e/$$r, 2))")"; \
	done
	@$(DEPS_ENV); for m in clip-vit-b32 dinov2-base; do \
	  bin/inferbench --model "$(RANDOM_MODELS)/$$m" --batches 1,8,32 --seconds 10 --threads $$(nproc); done
	@$(DEPS_ENV); for m in clip-vit-b32 dinov2-base; do \
	  n=$$([ $$m = dinov2-base ] && echo 100 || echo 500); \
	  files=($(BENCHDIR)/*); \
	  bin/embedfleet embed --threads $$(nproc) --model "$(RANDOM_MODELS)/$$m" --format npy -o bin/bench-$$m.npy "$${files[@]:0:$$n}" 2>&1 | \
	    sed -n 's/^embed \([^:]*\): \([0-9]*\) files.* \([0-9.]*\) img\/s$$/endtoend \1 img_s=\3 n=\2/p'; done

lint: deps ## gofmt, go vet, staticcheck (config: staticcheck.conf) and govulncheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt -w needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(DEPS_ENV); "$$EMBEDFLEET_STATICCHECK_BIN" ./...
	$(DEPS_ENV); "$$EMBEDFLEET_GOVULNCHECK_BIN" -db "file://$$EMBEDFLEET_VULNDB" ./...

fmt: ## gofmt -w every Go file
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build outputs (not the ~/.cache/embedfleet downloads)
	rm -rf bin
