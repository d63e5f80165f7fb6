#!/usr/bin/env bash
# Installs what Attune needs on Debian 12. Idempotent and non-interactive:
# packages already present are skipped by apt.
#   install-deps.sh                 build, tests, demo and the deploy/ validators (default)
#   install-deps.sh --build-only    compilers and -dev packages only (image build stage)
#   install-deps.sh --runtime-only  shared libraries the binaries load (image runtime stage)
#   --no-torch                      leave libtorch out (the GPU image brings a CUDA libtorch)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
torch=1
for arg in "$@"; do
  case "$arg" in
    --build-only) mode=build ;;
    --runtime-only) mode=runtime ;;
    --no-torch) torch=0 ;;
    *) echo "install-deps: unknown option $arg" >&2; exit 2 ;;
  esac
done

build=(
  build-essential cmake ninja-build pkg-config ccache git
  libopenblas0-pthread libopenblas-dev
  libgloo-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgflags-dev libgtest-dev libgmock-dev
  prometheus-cpp-dev libsqlite3-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev libicu-dev
)
runtime=(
  libopenblas0-pthread libgloo0 libgrpc++1.51 libprotobuf32 libabsl20220623 libgoogle-glog0v6
  libprometheus-cpp-core1.0 libsqlite3-0 libssl3 libyaml-cpp0.7 libicu72 ca-certificates
)
# Tests: reference peers (Debian's PyTorch, scikit-learn, Jinja2 for chat
# templates, libsentencepiece for tokenizer.model), certificates, a real Prometheus (promtool too), and the linters
# of deploy/.
# The Python client's tests: pytest, grpcio and protobuf for protoc's Python
# output, matplotlib for docs/python.md's walk-through.
# The fuzz targets (tests/fuzz): clang with libFuzzer and the sanitizers.
# Headless Chromium draws the HTML report in ReportRenderTest.
testing=(python3-torch python3-numpy python3-sklearn python3-yaml python3-grpcio python3-protobuf python3-pytest python3-jinja2 python3-sentencepiece
         python3-matplotlib openssl prometheus yamllint curl clang-14 libclang-rt-14-dev chromium)

case "$mode" in
  build) packages=("${build[@]}") ;;
  runtime) packages=("${runtime[@]}") ;;
  all) packages=("${build[@]}" "${testing[@]}") ;;
esac
if [ "$torch" = 1 ]; then
  case "$mode" in
    runtime) packages+=(libtorch1.13) ;;
    *) packages+=(libtorch-dev) ;;
  esac
fi
if [ "$mode" = all ] && ! command -v npm >/dev/null; then packages+=(nodejs npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  export DEBIAN_FRONTEND=noninteractive
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

# The offline validators of deploy/ (Kubernetes schemas, Grafana dashboard
# types), pinned in tools/package-lock.json.
if [ "$mode" = all ]; then
  if [ ! -d tools/node_modules ] || [ tools/package-lock.json -nt tools/node_modules ]; then
    echo "install-deps: npm ci in tools/"
    if (cd tools && npm ci --no-audit --no-fund --loglevel=error </dev/null); then
      touch tools/node_modules
    else
      # Everything else still builds and tests; the deploy_check test reports what is missing.
      echo "install-deps: WARNING: npm ci failed in tools/: the deploy/ validators are not installed" >&2
    fi
  fi
fi

# GloVe vectors for model.init_embeddings (scripts/fetch-embeddings.sh):
# tests and the bench use them.
if [ "$mode" = all ]; then
  if ! bash scripts/fetch-embeddings.sh; then
    echo "install-deps: WARNING: the GloVe vectors are not installed: model.init_embeddings will be refused" >&2
  fi
fi
