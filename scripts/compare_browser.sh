#!/usr/bin/env bash
# Browser decode speed side by side, in one run, in the same headless chromium (WebGPU on
# SwiftShader): inferlab's web app (its worker, burn on WebGPU) vs transformers.js
# (@huggingface/transformers, ONNX Runtime's WebGPU back end) on the very same weights, the
# ONNX copy exported by scripts/export_onnx.py. Load time, TTFT and decode tok/s, medians of
# alternating rounds; prints a table and writes $OUT/compare_browser.json.
#
#   scripts/compare_browser.sh                     # the fixture gpt2-tiny, 24 new tokens, 3 rounds
#   MODEL=distilgpt2 ROUNDS=5 scripts/compare_browser.sh   # a random model of a published shape
#
# Needs a Python with torch and transformers ($HF_PYTHON; onnx, onnxscript and onnxruntime are
# installed into it if missing), Node.js with npm, and chromium. The app is built with
# `trunk build --release` (what ships) unless $INFERLAB_DIST names a built dist/. The models and
# their ONNX exports are kept in $WORK, out of git.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-gpt2-tiny}
# ENGINES=inferlab: our app alone (no ONNX export); scripts/largest_in_tab.sh uses it. inferlab-twins:
# the app with its WGSL kernels off (`?kernels=off`), to measure what they buy on SwiftShader.
ENGINES=${ENGINES:-inferlab,transformers.js}
# WEIGHTS=f16 or int8: inferlab's weights converted as they load (half or a quarter of the GPU memory).
WEIGHTS=${WEIGHTS:-f32}
ROUNDS=${ROUNDS:-3}
NEW=${NEW:-24}
HF_PYTHON=${HF_PYTHON:-python3}
FIXTURES=${INFERLAB_FIXTURES:-tests/fixtures/gpt2}
WORK=${WORK:-$HOME/.cache/inferlab/compare-browser}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$WORK" "$OUT"

if [ -z "${INFERLAB_DIST:-}" ]; then
  echo "== trunk build --release (the shipped app) into $WORK/dist"
  trunk build --release --locked --dist "$WORK/dist"
  INFERLAB_DIST="$WORK/dist"
fi

models="$WORK/models"
if [[ $ENGINES == *transformers.js* ]]; then
  if ! "$HF_PYTHON" -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
    echo "== pip install onnx onnxscript onnxruntime"
    "$HF_PYTHON" -m pip install --quiet onnx onnxscript onnxruntime
  fi
fi
source="$FIXTURES/$MODEL"
if [ ! -d "$source" ]; then
  source="$WORK/random/$MODEL"
  if [ ! -f "$source/model.safetensors" ]; then
    echo "== a random $MODEL (seed 0) into $source"
    "$HF_PYTHON" scripts/hf_decode_bench.py --config "$MODEL" --save "$source" --tokenizer "$FIXTURES/tokenizer/tokenizer.json"
    cp "$FIXTURES/tokenizer/tokenizer_config.json" "$source/"
  fi
fi
if [[ $ENGINES == *transformers.js* ]]; then
  if [ ! -f "$models/$MODEL/onnx/model.onnx" ]; then
    echo "== ONNX export of $source"
    "$HF_PYTHON" scripts/export_onnx.py "$source" "$models/$MODEL"
  fi
elif [ "$source" = "$WORK/random/$MODEL" ]; then
  models="$WORK/random"
else
  # A fixture keeps its tokenizer apart: inferlab alone gets a folder of links.
  models="$WORK/linked"
  mkdir -p "$models/$MODEL"
  ln -sf "$(realpath "$source/config.json")" "$(realpath "$source/model.safetensors")" "$models/$MODEL/"
  ln -sf "$(realpath "$FIXTURES/tokenizer/tokenizer.json")" "$models/$MODEL/"
fi

# The ONNX Runtime postinstall fetches native binaries for Node.js, which the page does not use.
(cd scripts/compare_browser && [ -d node_modules ] || npm ci --no-audit --no-fund --ignore-scripts)
INFERLAB_DIST="$INFERLAB_DIST" COMPARE_MODELS="$models" COMPARE_MODEL="$MODEL" COMPARE_ENGINES="$ENGINES" COMPARE_WEIGHTS="$WEIGHTS" COMPARE_ROUNDS="$ROUNDS" \
  COMPARE_NEW_TOKENS="$NEW" COMPARE_JSON="$OUT/compare_browser.json" node scripts/compare_browser/compare_browser.mjs
echo "JSON: $OUT/compare_browser.json"
