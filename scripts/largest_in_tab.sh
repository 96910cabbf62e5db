#!/usr/bin/env bash
# The largest published GPT-2 shape that loads and generates in a browser tab: random models
# of gpt2 → gpt2-xl, one after another, in headless chromium (WebGPU on SwiftShader), through
# scripts/compare_browser.sh with inferlab alone. The tab streams model.safetensors to the GPU
# in blocks of rows, so neither the file nor its largest tensor sits in wasm memory (4 GB at
# most, and never given back). Prints one line per
# shape (load, TTFT, decode tok/s, the GPU process's and the tab's resident memory) and stops
# at the first shape that fails, with its error.
#
#   INFERLAB_DIST=dist scripts/largest_in_tab.sh          # all four shapes, 4 new tokens
#   SHAPES="gpt2-large gpt2-xl" NEW=8 scripts/largest_in_tab.sh
#   WEIGHTS=f16 scripts/largest_in_tab.sh                 # weights rounded to f16 (or int8) as they load
#
# Needs what compare_browser.sh needs (a Python with torch and transformers to make the random
# models: 0.5, 1.4, 3.1 and 6.2 GB of f32 safetensors, kept in its $WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPES=${SHAPES:-gpt2 gpt2-medium gpt2-large gpt2-xl}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
for shape in $SHAPES; do
  echo "== $shape"
  if ! MODEL=$shape ENGINES=inferlab ROUNDS=1 NEW=${NEW:-4} OUT="$OUT/$shape" COMPARE_TIMEOUT_S=${TIMEOUT_S:-1800} \
    scripts/compare_browser.sh 2>&1 | tee "$OUT/$shape.log" | grep -E "^\| inferlab|failed|Error"; then
    echo "$shape did not load and generate: see $OUT/$shape.log"
    exit 1
  fi
done
echo "JSON per shape: $OUT/<shape>/compare_browser.json"
