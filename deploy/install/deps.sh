#!/usr/bin/env bash
# deps.sh installs the native libraries and server binaries that embedfleet
# and its tests need, pinned by version and checked by sha256, into
#   ${EMBEDFLEET_CACHE:-$HOME/.cache/embedfleet}/<name>-<version>/
# A piece that is already there and still matches its checksum is skipped, so
# a second run takes about a second (it re-hashes what is cached).
#
# Usage: deploy/install/deps.sh [all|build|runtime|servers|tools|PIECE...] [--env]
#   gpu:     onnxruntime-gpu (Microsoft's GPU build, for --device cuda:N; CUDA 13 and cuDNN 9 come from the system)
#   pieces:  turbojpeg onnxruntime onnxruntime-gpu clip-vocab milvus-lite milvus-server minio nats-server chromium staticcheck helm govulncheck vulndb
#   build:   turbojpeg (libjpeg-turbo headers and static library, for cgo)
#   runtime: onnxruntime clip-vocab (what the embedfleet binary itself needs)
#   demo:    turbojpeg onnxruntime clip-vocab milvus-lite (what `make demo` needs: NATS runs in-process)
#   servers: milvus-lite milvus-server minio nats-server chromium (what the tests start; chromium drives the search page's tests)
#   tools:   staticcheck helm govulncheck vulndb (lint and chart checks)
#   --env    print shell exports for the installed paths and nothing else
set -euo pipefail

CACHE=${EMBEDFLEET_CACHE:-$HOME/.cache/embedfleet}

# ---- pins -----------------------------------------------------------------
# ONNX Runtime: Microsoft's CPU build, shipped inside the onnxruntime-node npm
# package. The checksum is of the extracted shared library itself.
ORT_VERSION=1.24.3
ORT_LIB_SHA256=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
# milvus-lite: Milvus's own engine behind a gRPC server, from the official
# PyPI wheel. The checksum is of the wheel; the npm repack is a fallback whose
# checksum is of its tarball.
MILVUS_LITE_VERSION=2.5.1
MILVUS_LITE_WHEEL=milvus_lite-2.5.1-py3-none-manylinux2014_x86_64.whl
MILVUS_LITE_WHEEL_SHA256=25ce13f4b8d46876dd2b7ac8563d7d8306da7ff3999bb0d14b116b30f71d706c
MILVUS_LITE_NPM=@lyyyuna/milvus-lite-linux-x64@2.5.102
# The real Milvus server (standalone: embedded etcd, rocksmq, local
# storage), as PyPI's `milvus` package ships it: its binary and libraries,
# lzma-compressed, and a config template. 2.3.5 is the newest version whose
# wheel installs on Linux x86-64 here. The installer unpacks them; the test
# harness (shared/stack) writes each instance's config, with its own ports,
# from the template. The checksum is of the wheel.
MILVUS_SERVER_VERSION=2.3.5
MILVUS_SERVER_WHEEL=milvus-2.3.5-py3-none-manylinux2014_x86_64.whl
MILVUS_SERVER_WHEEL_SHA256=69515a0630ce29fd10e101fa442afea8ca1387b93a456cd9bd41fdf3deb93d04
# ONNX Runtime's GPU build for CUDA 13: the three libraries of Microsoft's
# onnxruntime-gpu wheel on PyPI (255 MB). Checksums: the wheel and each
# library taken from it.
ORT_GPU_VERSION=1.31.1
ORT_GPU_WHEEL=onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_GPU_WHEEL_SHA256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
ORT_GPU_LIB_SHA256=5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303
ORT_GPU_CUDA_SHA256=d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137
ORT_GPU_SHARED_SHA256=086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
# CLIP's BPE vocabulary (OpenAI's bpe_simple_vocab_16e6.txt.gz) as open_clip
# ships it in its PyPI wheel; deploy/install/clipvocab turns it into the
# vocab.json and merges.txt of openai/clip-vit-base-patch32. Checksums: the
# wheel, the file inside it, and the two files made from it.
OPEN_CLIP_VERSION=3.3.0
OPEN_CLIP_WHEEL=open_clip_torch-3.3.0-py3-none-any.whl
OPEN_CLIP_WHEEL_SHA256=c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce
CLIP_BPE_SHA256=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
CLIP_VOCAB_JSON_SHA256=ac0767df30f95b61ce28e0c9a019ef39cd0edd34d253b41deea6352968d24d76
CLIP_MERGES_SHA256=9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a
# Go-built servers and tools: the Go command checks every module it fetches
# against go.sum and the Go checksum database; the sha256 recorded after the
# build guards the cached binary against later corruption.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
NATS_SERVER_VERSION=v2.15.2
STATICCHECK_VERSION=v0.8.2
HELM_VERSION=v3.22.0
GOVULNCHECK_VERSION=v1.9.0
# Go's vulnerability database, built locally from the golang.org/x/vulndb
# module (its OSV files) because vuln.go.dev is not reachable from every
# build machine. Bump the pseudo-version to refresh it.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
# libjpeg-turbo, linked statically into the binary (the JPEG decoder Pillow
# uses, hence pixel-exact parity): the static library comes with the TurboJPEG
# package, the libjpeg API's headers (jpeglib.h) with the libjpeg one, both
# of one libjpeg-turbo release. From the system's packages.
TURBOJPEG_DEBS="libturbojpeg0-dev libjpeg62-turbo-dev"
# Chromium, headless, for the search page's browser tests: Debian's package
# (156 in bookworm's security repository), as root through apt.
CHROMIUM_DEB=chromium
TURBOJPEG_HEADER=/usr/include/turbojpeg.h
JPEGLIB_HEADER=/usr/include/jpeglib.h

# ---- helpers ----------------------------------------------------------------
log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# check_sha FILE WANT NAME
check_sha() {
  local got
  got=$(sha256_of "$1")
  [ "$got" = "$2" ] || die "$3: sha256 mismatch for $(basename "$1"): got $got, want $2"
}

# cached DIR FILE: true when DIR holds FILE and FILE still matches the sha256
# recorded in DIR/.sha256 at install time.
cached() {
  local dir=$1 file=$2
  [ -f "$dir/.sha256" ] && [ -f "$dir/$file" ] || return 1
  [ "$(sha256_of "$dir/$file")" = "$(cat "$dir/.sha256")" ]
}

# finish TMPDIR DIR FILE: record FILE's checksum and move TMPDIR into place.
finish() {
  local tmp=$1 dir=$2 file=$3
  sha256_of "$tmp/$file" > "$tmp/.sha256"
  chmod 755 "$tmp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

need() { command -v "$1" >/dev/null 2>&1 || die "$2 needs '$1' on PATH"; }

# ---- pieces -----------------------------------------------------------------
ORT_DIR=$CACHE/onnxruntime-$ORT_VERSION
MILVUS_DIR=$CACHE/milvus-lite-$MILVUS_LITE_VERSION
MILVUS_SERVER_DIR=$CACHE/milvus-server-$MILVUS_SERVER_VERSION
MINIO_DIR=$CACHE/minio-$MINIO_VERSION
NATS_DIR=$CACHE/nats-server-$NATS_SERVER_VERSION
STATICCHECK_DIR=$CACHE/staticcheck-$STATICCHECK_VERSION
HELM_DIR=$CACHE/helm-$HELM_VERSION
GOVULNCHECK_DIR=$CACHE/govulncheck-$GOVULNCHECK_VERSION
VULNDB_DIR=$CACHE/vulndb-$VULNDB_VERSION
CLIP_VOCAB_DIR=$CACHE/clip-vocab-open_clip-$OPEN_CLIP_VERSION
ORT_GPU_DIR=$CACHE/onnxruntime-gpu-$ORT_GPU_VERSION
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

install_turbojpeg() {
  local lib
  lib=$(find /usr/lib /usr/lib64 /usr/local/lib -name libturbojpeg.a 2>/dev/null | head -n 1 || true)
  if [ -f "$TURBOJPEG_HEADER" ] && [ -f "$JPEGLIB_HEADER" ] && [ -n "$lib" ]; then log "turbojpeg: present ($TURBOJPEG_HEADER, $JPEGLIB_HEADER, $lib)"; return; fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "turbojpeg: apt-get install $TURBOJPEG_DEBS"
    # shellcheck disable=SC2086 # two package names
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $TURBOJPEG_DEBS; } >"$CACHE/apt.log" 2>&1; then
      die "turbojpeg: apt-get could not install $TURBOJPEG_DEBS: $(tail -n 3 "$CACHE/apt.log")"
    fi
    log "turbojpeg: installed $TURBOJPEG_DEBS"
    return
  fi
  die "turbojpeg: $TURBOJPEG_HEADER, $JPEGLIB_HEADER or libturbojpeg.a is missing; install the packages $TURBOJPEG_DEBS (Debian/Ubuntu, as root) or libjpeg-turbo-devel (Fedora)"
}

install_chromium() {
  local bin
  bin=$(command -v chromium || command -v chromium-browser || true)
  if [ -n "$bin" ]; then log "chromium: present ($bin, $("$bin" --version 2>/dev/null | head -n 1))"; return; fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "chromium: apt-get install $CHROMIUM_DEB (about 100 MB, for the search page's browser tests)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $CHROMIUM_DEB; } >"$CACHE/apt-chromium.log" 2>&1; then
      die "chromium: apt-get could not install $CHROMIUM_DEB: $(tail -n 3 "$CACHE/apt-chromium.log")"
    fi
    log "chromium: installed $(command -v chromium)"
    return
  fi
  die "chromium: not installed; install Debian's chromium package (as root: apt-get install chromium) or set EMBEDFLEET_CHROMIUM_BIN"
}

install_onnxruntime() {
  local dir=$ORT_DIR lib=lib/libonnxruntime.so.$ORT_VERSION
  if cached "$dir" "$lib"; then log "onnxruntime $ORT_VERSION: cached at $dir/$lib"; return; fi
  need npm onnxruntime
  log "onnxruntime $ORT_VERSION: fetching onnxruntime-node@$ORT_VERSION from the npm registry (86 MB)"
  local tmp; tmp=$(mktemp -d "$CACHE/.onnxruntime.XXXXXX")
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null 2>"$tmp/npm.log") ||
    die "onnxruntime: the npm registry refused onnxruntime-node@$ORT_VERSION: $(tail -n 3 "$tmp/npm.log")"
  mkdir -p "$tmp/lib"
  tar -xzf "$tmp/onnxruntime-node-$ORT_VERSION.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 ||
    die "onnxruntime: libonnxruntime.so.1 for linux/x64 is not in onnxruntime-node@$ORT_VERSION"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$tmp/$lib"
  rm -rf "$tmp/package" "$tmp"/*.tgz "$tmp/npm.log"
  check_sha "$tmp/$lib" "$ORT_LIB_SHA256" onnxruntime
  ln -s "libonnxruntime.so.$ORT_VERSION" "$tmp/lib/libonnxruntime.so"
  finish "$tmp" "$dir" "$lib"
  log "onnxruntime $ORT_VERSION: installed $dir/$lib"
}

install_milvus_lite() {
  local dir=$MILVUS_DIR bin=lib/milvus
  if cached "$dir" "$bin"; then log "milvus-lite $MILVUS_LITE_VERSION: cached at $dir/$bin"; return; fi
  local tmp; tmp=$(mktemp -d "$CACHE/.milvus-lite.XXXXXX")
  log "milvus-lite $MILVUS_LITE_VERSION: fetching the wheel from PyPI (55 MB)"
  if python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --python-version 3.11 "milvus-lite==$MILVUS_LITE_VERSION" -d "$tmp/dl" >"$tmp/pip.log" 2>&1 &&
      [ -f "$tmp/dl/$MILVUS_LITE_WHEEL" ]; then
    check_sha "$tmp/dl/$MILVUS_LITE_WHEEL" "$MILVUS_LITE_WHEEL_SHA256" milvus-lite
    python3 -m zipfile -e "$tmp/dl/$MILVUS_LITE_WHEEL" "$tmp/dl/x"
    mv "$tmp/dl/x/milvus_lite/lib" "$tmp/lib"
  else
    log "milvus-lite: PyPI refused milvus-lite==$MILVUS_LITE_VERSION ($(tail -n 1 "$tmp/pip.log")); trying the npm repack $MILVUS_LITE_NPM"
    need npm milvus-lite
    (cd "$tmp" && npm pack --silent "$MILVUS_LITE_NPM" >/dev/null 2>"$tmp/npm.log") ||
      die "milvus-lite: both PyPI and the npm registry refused it: $(tail -n 3 "$tmp/npm.log")"
    mkdir -p "$tmp/dl" && tar -xzf "$tmp"/*.tgz -C "$tmp/dl"
    local found; found=$(dirname "$(find "$tmp/dl" -type f -name milvus -perm -u+x | head -n 1)")
    [ -n "$found" ] && [ "$found" != . ] || die "milvus-lite: no milvus binary in $MILVUS_LITE_NPM"
    mv "$found" "$tmp/lib"
  fi
  rm -rf "$tmp/dl" "$tmp"/*.log "$tmp"/*.tgz
  chmod +x "$tmp/$bin"
  finish "$tmp" "$dir" "$bin"
  log "milvus-lite $MILVUS_LITE_VERSION: installed $dir/$bin"
}

install_milvus_server() {
  local dir=$MILVUS_SERVER_DIR bin=bin/milvus
  if cached "$dir" "$bin"; then log "milvus-server $MILVUS_SERVER_VERSION: cached at $dir/$bin"; return; fi
  local tmp; tmp=$(mktemp -d "$CACHE/.milvus-server.XXXXXX")
  log "milvus-server $MILVUS_SERVER_VERSION: fetching PyPI's milvus wheel (58 MB)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.11 "milvus==$MILVUS_SERVER_VERSION" -d "$tmp/dl" >"$tmp/pip.log" 2>&1 &&
    [ -f "$tmp/dl/$MILVUS_SERVER_WHEEL" ] || die "milvus-server: PyPI refused milvus==$MILVUS_SERVER_VERSION: $(tail -n 3 "$tmp/pip.log")"
  check_sha "$tmp/dl/$MILVUS_SERVER_WHEEL" "$MILVUS_SERVER_WHEEL_SHA256" milvus-server
  python3 -m zipfile -e "$tmp/dl/$MILVUS_SERVER_WHEEL" "$tmp/dl/x"
  mkdir -p "$tmp/bin" "$tmp/template"
  log "milvus-server $MILVUS_SERVER_VERSION: unpacking the server and its libraries (250 MB)"
  python3 - "$tmp/dl/x/milvus/data/bin" "$tmp/bin" <<'PY'
import lzma, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    if name.endswith(".lzma"):
        with lzma.open(os.path.join(src, name)) as f, open(os.path.join(dst, name[:-5]), "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
PY
  cp "$tmp/dl/x/milvus/data/config.yaml.template" "$tmp/dl/x/milvus/data/glog.conf" "$tmp/template/"
  [ -f "$tmp/bin/milvus" ] || die "milvus-server: no milvus binary in $MILVUS_SERVER_WHEEL"
  chmod +x "$tmp/bin/milvus"
  rm -rf "$tmp/dl" "$tmp"/*.log
  finish "$tmp" "$dir" "$bin"
  log "milvus-server $MILVUS_SERVER_VERSION: installed $dir/$bin"
}

install_onnxruntime_gpu() {
  local dir=$ORT_GPU_DIR lib=lib/libonnxruntime.so.$ORT_GPU_VERSION
  if cached "$dir" "$lib"; then log "onnxruntime-gpu $ORT_GPU_VERSION: cached at $dir/$lib"; return; fi
  local tmp; tmp=$(mktemp -d "$CACHE/.onnxruntime-gpu.XXXXXX")
  log "onnxruntime-gpu $ORT_GPU_VERSION: fetching Microsoft's onnxruntime-gpu wheel from PyPI (255 MB)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
      "onnxruntime-gpu==$ORT_GPU_VERSION" -d "$tmp/dl" >"$tmp/pip.log" 2>&1 && [ -f "$tmp/dl/$ORT_GPU_WHEEL" ] ||
    die "onnxruntime-gpu: PyPI refused onnxruntime-gpu==$ORT_GPU_VERSION: $(tail -n 3 "$tmp/pip.log")"
  check_sha "$tmp/dl/$ORT_GPU_WHEEL" "$ORT_GPU_WHEEL_SHA256" onnxruntime-gpu
  mkdir -p "$tmp/lib"
  python3 - "$tmp/dl/$ORT_GPU_WHEEL" "$tmp/lib" <<'PY' || die "onnxruntime-gpu: the wheel lacks its libraries"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in ("libonnxruntime.so.1.31.1", "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"):
    with z.open("onnxruntime/capi/" + n) as src, open(sys.argv[2] + "/" + n, "wb") as dst:
        dst.write(src.read())
PY
  check_sha "$tmp/$lib" "$ORT_GPU_LIB_SHA256" onnxruntime-gpu
  check_sha "$tmp/lib/libonnxruntime_providers_cuda.so" "$ORT_GPU_CUDA_SHA256" onnxruntime-gpu
  check_sha "$tmp/lib/libonnxruntime_providers_shared.so" "$ORT_GPU_SHARED_SHA256" onnxruntime-gpu
  ln -s "libonnxruntime.so.$ORT_GPU_VERSION" "$tmp/lib/libonnxruntime.so"
  rm -rf "$tmp/dl" "$tmp"/*.log
  finish "$tmp" "$dir" "$lib"
  log "onnxruntime-gpu $ORT_GPU_VERSION: installed $dir/lib (CUDA 13 and cuDNN 9 must be on the loader path for --device cuda:N)"
}

install_clip_vocab() {
  local dir=$CLIP_VOCAB_DIR
  if cached "$dir" vocab.json && [ "$(sha256_of "$dir/merges.txt" 2>/dev/null)" = "$CLIP_MERGES_SHA256" ]; then
    log "clip-vocab: cached at $dir"; return
  fi
  need go clip-vocab
  local tmp; tmp=$(mktemp -d "$CACHE/.clip-vocab.XXXXXX")
  log "clip-vocab: fetching open_clip_torch==$OPEN_CLIP_VERSION from PyPI (1.5 MB) for its bpe_simple_vocab_16e6.txt.gz"
  python3 -m pip download --quiet --no-deps --only-binary=:all: "open_clip_torch==$OPEN_CLIP_VERSION" -d "$tmp/dl" >"$tmp/pip.log" 2>&1 &&
    [ -f "$tmp/dl/$OPEN_CLIP_WHEEL" ] || die "clip-vocab: PyPI refused open_clip_torch==$OPEN_CLIP_VERSION: $(tail -n 3 "$tmp/pip.log")"
  check_sha "$tmp/dl/$OPEN_CLIP_WHEEL" "$OPEN_CLIP_WHEEL_SHA256" clip-vocab
  python3 -m zipfile -e "$tmp/dl/$OPEN_CLIP_WHEEL" "$tmp/dl/x"
  local gz=$tmp/dl/x/open_clip/bpe_simple_vocab_16e6.txt.gz
  [ -f "$gz" ] || die "clip-vocab: no open_clip/bpe_simple_vocab_16e6.txt.gz in $OPEN_CLIP_WHEEL"
  check_sha "$gz" "$CLIP_BPE_SHA256" clip-vocab
  (cd "$ROOT" && go run ./deploy/install/clipvocab --in "$gz" --out "$tmp") >"$tmp/go.log" 2>&1 ||
    die "clip-vocab: converting the vocabulary failed: $(tail -n 3 "$tmp/go.log")"
  check_sha "$tmp/vocab.json" "$CLIP_VOCAB_JSON_SHA256" clip-vocab
  check_sha "$tmp/merges.txt" "$CLIP_MERGES_SHA256" clip-vocab
  mv "$gz" "$tmp/"
  rm -rf "$tmp/dl" "$tmp"/*.log
  finish "$tmp" "$dir" vocab.json
  log "clip-vocab: installed $dir/vocab.json and merges.txt"
}

# go_install NAME DIR MODULE@VERSION BINARY [WHAT THE BUILD TAKES]
go_install() {
  local name=$1 dir=$2 mod=$3 binname=$4 takes=${5:-about a minute on 2 cores}
  if cached "$dir" "bin/$binname"; then log "$name: cached at $dir/bin/$binname"; return; fi
  need go "$name"
  local tmp; tmp=$(mktemp -d "$CACHE/.$name.XXXXXX")
  log "$name: go install $mod (builds from source; $takes)"
  if ! GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false go install "$mod" >"$tmp/go.log" 2>&1; then
    die "$name: go install $mod failed (the Go module proxy may have refused it): $(tail -n 5 "$tmp/go.log")"
  fi
  rm -f "$tmp/go.log"
  finish "$tmp" "$dir" "bin/$binname"
  log "$name: installed $dir/bin/$binname"
}

install_minio() { go_install minio "$MINIO_DIR" "github.com/minio/minio@$MINIO_VERSION" minio "a few minutes on 2 cores"; }
install_nats_server() { go_install nats-server "$NATS_DIR" "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" nats-server; }
install_staticcheck() { go_install staticcheck "$STATICCHECK_DIR" "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" staticcheck; }
install_helm() { go_install helm "$HELM_DIR" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" helm; }
install_govulncheck() { go_install govulncheck "$GOVULNCHECK_DIR" "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" govulncheck; }

install_vulndb() {
  local dir=$VULNDB_DIR idx=db/index/db.json
  if cached "$dir" "$idx"; then log "vulndb: cached at $dir/db"; return; fi
  need go vulndb
  local tmp; tmp=$(mktemp -d "$CACHE/.vulndb.XXXXXX")
  log "vulndb: building Go's vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION"
  if ! GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false go install "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" >"$tmp/go.log" 2>&1; then
    die "vulndb: go install indexdb failed: $(tail -n 5 "$tmp/go.log")"
  fi
  local src
  src=$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -d "$src/data/osv" ] || die "vulndb: no data/osv in golang.org/x/vulndb@$VULNDB_VERSION"
  "$tmp/bin/indexdb" -vulns "$src/data/osv" -out "$tmp/db" >"$tmp/index.log" 2>&1 || die "vulndb: indexdb failed: $(tail -n 5 "$tmp/index.log")"
  rm -rf "$tmp/bin" "$tmp"/*.log
  finish "$tmp" "$dir" "$idx"
  log "vulndb: built $dir/db"
}

print_env() {
  cat <<ENV
export EMBEDFLEET_ORT_LIB=$ORT_DIR/lib/libonnxruntime.so.$ORT_VERSION
export EMBEDFLEET_MILVUS_BIN=$MILVUS_DIR/lib/milvus
export EMBEDFLEET_MILVUS_SERVER_HOME=$MILVUS_SERVER_DIR
export EMBEDFLEET_MINIO_BIN=$MINIO_DIR/bin/minio
export EMBEDFLEET_NATS_BIN=$NATS_DIR/bin/nats-server
export EMBEDFLEET_STATICCHECK_BIN=$STATICCHECK_DIR/bin/staticcheck
export EMBEDFLEET_HELM_BIN=$HELM_DIR/bin/helm
export EMBEDFLEET_GOVULNCHECK_BIN=$GOVULNCHECK_DIR/bin/govulncheck
export EMBEDFLEET_VULNDB=$VULNDB_DIR/db
export EMBEDFLEET_CLIP_VOCAB=$CLIP_VOCAB_DIR
export EMBEDFLEET_ORT_GPU_LIB=$ORT_GPU_DIR/lib/libonnxruntime.so.$ORT_GPU_VERSION
export EMBEDFLEET_CHROMIUM_BIN=${EMBEDFLEET_CHROMIUM_BIN:-$(command -v chromium || echo /usr/bin/chromium)}
ENV
}

main() {
  local pieces=() env_only=0
  for a in "$@"; do
    case $a in
      --env) env_only=1 ;;
      all) pieces+=(turbojpeg onnxruntime onnxruntime-gpu clip-vocab milvus-lite milvus-server minio nats-server chromium staticcheck helm govulncheck vulndb) ;;
      build) pieces+=(turbojpeg) ;;
      demo) pieces+=(turbojpeg onnxruntime clip-vocab milvus-lite) ;;
      runtime) pieces+=(onnxruntime clip-vocab) ;;
      gpu) pieces+=(onnxruntime-gpu) ;;
      servers) pieces+=(milvus-lite milvus-server minio nats-server chromium) ;;
      tools) pieces+=(staticcheck helm govulncheck vulndb) ;;
      turbojpeg|onnxruntime|onnxruntime-gpu|clip-vocab|milvus-lite|milvus-server|minio|nats-server|chromium|staticcheck|helm|govulncheck|vulndb) pieces+=("$a") ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
      *) die "unknown piece '$a' (want all, build, demo, runtime, gpu, servers, tools, turbojpeg, onnxruntime, onnxruntime-gpu, clip-vocab, milvus-lite, milvus-server, minio, nats-server, chromium, staticcheck, helm, govulncheck, vulndb)" ;;
    esac
  done
  if [ "$env_only" = 1 ]; then print_env; return; fi
  [ ${#pieces[@]} -gt 0 ] || pieces=(turbojpeg onnxruntime onnxruntime-gpu clip-vocab milvus-lite milvus-server minio nats-server chromium staticcheck helm govulncheck vulndb)
  mkdir -p "$CACHE"
  for p in "${pieces[@]}"; do
    case $p in
      turbojpeg) install_turbojpeg ;;
      onnxruntime) install_onnxruntime ;;
      clip-vocab) install_clip_vocab ;;
      onnxruntime-gpu) install_onnxruntime_gpu ;;
      chromium) install_chromium ;;
      milvus-lite) install_milvus_lite ;;
      milvus-server) install_milvus_server ;;
      minio) install_minio ;;
      nats-server) install_nats_server ;;
      staticcheck) install_staticcheck ;;
      helm) install_helm ;;
      govulncheck) install_govulncheck ;;
      vulndb) install_vulndb ;;
    esac
  done
}

main "$@"
