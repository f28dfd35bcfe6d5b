#!/usr/bin/env bash
# gpu-check.sh: the prepared GPU measurement (issue: GPU workers on an H200).
#
# The GPU machine has no network and takes files in copies of at most 64 MiB
# (checkout included); ignored files stay there while it is warm. So the run
# is in stages, each one device command:
#
#   pack     (here)   bin/gpu/ holds the embedfleet binary, inferbench and
#                     ONNX Runtime's GPU libraries (deps.sh gpu), gzipped and
#                     cut into parts of PART_MIB (default 48) MiB, with a
#                     manifest of sha256s; carry one part per device run
#   assemble (device) join the parts, check every sha256, unpack into bin/gpu/lib
#   run      (device) find the CUDA 13 libraries of the machine's PyTorch venv,
#                     export random-init CLIP and DINOv2 (fp32, fp16) with
#                     deploy/export/export.py, run inferbench on cuda:0 at
#                     batch 32/128/256 and `embedfleet embed --device cuda:0`
#                     (exact and fast decoding) on BENCHDIR, and write every
#                     line to OUT/gpu-check.log
#
#   deploy/bench/gpu-check.sh pack
#   deploy/bench/gpu-check.sh assemble                 # on the device, after the last part
#   deploy/bench/gpu-check.sh run "$OUT"               # on the device
#   deploy/bench/gpu-check.sh --dry-run OUT            # here: every stage, on the CPU, small
#
# --dry-run rehearses everything it can on a CPU machine: packing, a
# round trip through the parts and their checksums, the CUDA library
# lookup, and the run stage with --device cpu, the tiny test models and a
# few photos, so that the device's 15 minutes go to measuring.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PART_MIB=${PART_MIB:-48}
GPU_DIR=$ROOT/bin/gpu
BENCHDIR=${BENCHDIR:-$ROOT/../shared/bench/bsds500}
log() { printf 'gpu-check: %s\n' "$*" >&2; }
die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 1; }

pack() {
  local out=${1:-$GPU_DIR}
  eval "$(deploy/install/deps.sh --env)"
  deploy/install/deps.sh gpu >&2
  make -s build >&2
  go build -o bin/inferbench ./deploy/bench/inferbench
  rm -rf "$out" && mkdir -p "$out/stage"
  cp bin/embedfleet bin/inferbench "$out/stage/"
  cp "$(dirname "$EMBEDFLEET_ORT_GPU_LIB")"/libonnxruntime.so.* "$(dirname "$EMBEDFLEET_ORT_GPU_LIB")"/libonnxruntime_providers_*.so "$out/stage/"
  (cd "$out/stage" && sha256sum -- * > ../manifest.sha256)
  tar -C "$out/stage" -cf - . | gzip -6 > "$out/bundle.tar.gz"
  rm -rf "$out/stage"
  (cd "$out" && split -b "${PART_MIB}m" -d -a 2 bundle.tar.gz part. && rm bundle.tar.gz && sha256sum part.* > parts.sha256)
  log "packed $(ls "$out"/part.* | wc -l) parts of at most $PART_MIB MiB in $out; carry bin/gpu/manifest.sha256, bin/gpu/parts.sha256 and one part.NN per device run"
}

assemble() {
  local dir=${1:-$GPU_DIR}
  [ -f "$dir/parts.sha256" ] || die "no $dir/parts.sha256: carry it with the parts"
  (cd "$dir" && sha256sum -c --quiet parts.sha256) || die "a part is missing or damaged (ls: $(ls "$dir"))"
  mkdir -p "$dir/lib"
  cat "$dir"/part.* | gunzip | tar -C "$dir/lib" -xf -
  (cd "$dir/lib" && sha256sum -c --quiet ../manifest.sha256) || die "an unpacked file does not match its sha256"
  ln -sf "libonnxruntime.so.1.31.1" "$dir/lib/libonnxruntime.so"
  log "assembled $(ls "$dir/lib" | wc -l) files in $dir/lib, every sha256 checked"
}

# cuda_path prints the lib folders of the nvidia-* packages of the Python at $PY.
cuda_path() {
  "$PY" - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = sorted({os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(os.path.join(root, "*", "lib", "lib*.so*"))})
print(":".join(dirs))
PY
}

run_stage() {
  local out=$1 dry=${2:-0}
  mkdir -p "$out"
  local logf=$out/gpu-check.log device=cuda:0 bin=$GPU_DIR/lib/embedfleet infer=$GPU_DIR/lib/inferbench
  export EMBEDFLEET_ORT_GPU_LIB=$GPU_DIR/lib/libonnxruntime.so.1.31.1
  local models=$out/models batches=32,128,256 secs=10 photos=500
  PY=${PY:-python3}
  if [ "$dry" = 1 ]; then
    device=cpu batches=8 secs=1 photos=16
    eval "$(deploy/install/deps.sh --env)"
    export EMBEDFLEET_ORT_LIB
  fi
  local cuda; cuda=$(cuda_path)
  if [ -n "$cuda" ]; then export LD_LIBRARY_PATH=$cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; fi
  {
    echo "gpu-check $(date -u +%FT%TZ) device=$device commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cuda_libs=${cuda:-none}"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: none"
  } | tee "$logf"
  mkdir -p "$models"
  if [ "$dry" = 1 ]; then
    cp -r shared/embed/testdata/models/clip-vit-b32 shared/embed/testdata/models/dinov2-base "$models/"
  else
    for m in clip-vit-b32 dinov2-base; do
      for p in fp32 fp16; do
        local d=$models/$m-$p extra=""
        [ "$p" = fp16 ] && extra=--fp16
        [ -f "$d/spec.json" ] || (cd deploy/export && "$PY" export.py --model "$m" --random-init --seed 0 $extra --out "$d") 2>&1 | grep -E '^export' | tee -a "$logf"
      done
    done
  fi
  local files=("$BENCHDIR"/*.jpg)
  files=("${files[@]:0:$photos}")
  for d in "$models"/*/; do
    d=${d%/}
    "$infer" --model "$d" --device "$device" --batches "$batches" --seconds "$secs" 2>&1 | tee -a "$logf"
    for dec in exact fast; do
      "$bin" embed --device "$device" --decode "$dec" --batch 64 --model "$d" --format npy -o "$out/$(basename "$d")-$dec.npy" "${files[@]}" 2>&1 |
        sed -n "s|^embed \([^:]*\): \([0-9]*\) files.* \([0-9.]*\) img/s\$|gpu \1 model_dir=$(basename "$d") decode=$dec e2e_img_s=\3 n=\2|p" | tee -a "$logf"
    done
  done
  log "done: $logf"
}

dry_run() {
  local out=${1:?usage: gpu-check.sh --dry-run OUT}
  mkdir -p "$out"
  # A round trip through the parts, as the device will see them.
  PART_MIB=16 pack "$out/packed"
  rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR"
  cp "$out/packed"/* "$GPU_DIR/"
  assemble "$GPU_DIR"
  # A damaged part must be caught.
  cp -r "$GPU_DIR" "$out/damaged" && printf x >> "$out/damaged/part.00"
  if (assemble "$out/damaged") >/dev/null 2>&1; then die "a damaged part was not caught"; fi
  run_stage "$out" 1
  grep -q '^infer ' "$out/gpu-check.log" || die "no inference line"
  [ "$(grep -c '^gpu ' "$out/gpu-check.log")" -eq 4 ] || die "want 4 end-to-end lines (2 models x exact, fast)"
  log "dry run passed: $out/gpu-check.log"
}

case ${1:-} in
  pack) pack ;;
  assemble) assemble ;;
  run) run_stage "${2:?usage: gpu-check.sh run OUT}" 0 ;;
  --dry-run) dry_run "${2:-}" ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
