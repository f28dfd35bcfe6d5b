#!/usr/bin/env bash
# Both copy-detection pipelines on one machine with the same weights: the
# article's (one image at a time, then PyTorch at batch 32) and embedfleet's
# (`embedfleet bench copydetect`), then the speed-up lines. This is the body of
# `make bench-article`; it runs unchanged on any machine that has the pieces.
#
# Usage: deploy/bench/article.sh DATA OUT
#   DATA  make_queries.py output (refs/, queries/, truth.csv)
#   OUT   results: article-*.json, batched-*.json, embedfleet/, *.log
# Environment:
#   PY      python with torch, transformers, pillow and faiss (required)
#   BIN     the embedfleet binary (default bin/embedfleet)
#   MODELS  folder holding clip-vit-b32/ and dinov2-base/ exported by
#           deploy/export/export.py --random-init --seed 0 (required); where
#           it also holds clip-vit-b32-int8/ and dinov2-base-int8/ (export.py
#           --int8), embedfleet runs a third time with those, same data
#   EMBEDFLEET_ORT_LIB, EMBEDFLEET_MILVUS_BIN  as for embedfleet
#   CUDA=1  also run the article's pipeline on the GPU (reported, not compared)
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
data=$1 out=$2
: "${PY:?set PY to a python with torch, transformers and faiss}" "${MODELS:?set MODELS to the exported models folder}"
BIN=${BIN:-bin/embedfleet}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "machine cpus=$(nproc) cpu=\"${cpu:-unknown}\" torch=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"

# run LOG CMD...: the command's stdout passes through; its stderr (library
# warnings) goes to LOG, and is shown if the command fails.
run() {
	local log=$1
	shift
	if ! "$@" 2>"$log"; then
		echo "failed: $* (last lines of $log follow)" >&2
		tail -20 "$log" >&2
		exit 1
	fi
}

for m in clip-vit-b32 dinov2-base; do
	run "$out/article-$m.log" "$PY" "$here/article_pipeline.py" --data "$data" --model $m --json "$out/article-$m.json"
	run "$out/batched-$m.log" "$PY" "$here/article_pipeline.py" --data "$data" --model $m --batch-size 32 --json "$out/batched-$m.json"
done
run "$out/embedfleet.log" "$BIN" bench copydetect --models-dir "$MODELS" --models clip-vit-b32,dinov2-base \
	--refs "$data/refs" --queries "$data/queries" --truth "$data/truth.csv" --out "$out/embedfleet"
if [ -f "$MODELS/clip-vit-b32-int8/spec.json" ] && [ -f "$MODELS/dinov2-base-int8/spec.json" ]; then
	run "$out/embedfleet-int8.log" "$BIN" bench copydetect --models "$MODELS/clip-vit-b32-int8,$MODELS/dinov2-base-int8" \
		--refs "$data/refs" --queries "$data/queries" --truth "$data/truth.csv" --out "$out/embedfleet-int8"
fi
"$PY" "$here/compare.py" "$out"

if [ "${CUDA:-0}" = 1 ]; then
	for m in clip-vit-b32 dinov2-base; do
		run "$out/cuda-article-$m.log" "$PY" "$here/article_pipeline.py" --device cuda --data "$data" --model $m --json "$out/cuda-article-$m.json"
		run "$out/cuda-batched-$m.log" "$PY" "$here/article_pipeline.py" --device cuda --batch-size 32 --data "$data" --model $m --json "$out/cuda-batched-$m.json"
	done
fi
