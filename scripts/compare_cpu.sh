#!/usr/bin/env bash
# CPU decode speed side by side, in one run, on the very same weights: inferlab
# (`bench decode`, burn's flex device, f32, f16 and int8 weights), HF transformers
# (scripts/hf_decode_bench.py) and llama.cpp (llama-cpp-python's C API, batched, GGUF f32, f16 and q8_0 made by
# the converter in llama.cpp's source). The ratio column is to inferlab in f32.
# Greedy decoding with each one's KV cache, warm-up excluded, the same threads for all.
# Prints every run's JSON, then one table (tok/s over all rows, ratio to inferlab) and writes
# it as JSON to $OUT/compare_cpu.json.
#
#   scripts/compare_cpu.sh                       # gpt2's shape, prompt 8, 64 new tokens, batch 1 and 8, 2 threads
#   SHAPE=distilgpt2 BATCHES="1 4 8" scripts/compare_cpu.sh
#   PROMPT=512 NEW=4 scripts/compare_cpu.sh      # TTFT (prefill) of a long prompt side by side
#
# Needs a built inferlab ($INFERLAB_BIN, default cargo's debug binary: the dev profile
# optimises dependencies) and a Python with torch and transformers ($HF_PYTHON), into which
# llama-cpp-python is installed (built from source, ~10 min once) if missing. The random
# model and its GGUFs are kept in $WORK, out of git.
set -euo pipefail
cd "$(dirname "$0")/.."

SHAPE=${SHAPE:-gpt2}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-8}
NEW=${NEW:-64}
BATCHES=${BATCHES:-1 8}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-0.3.36}
BIN=${INFERLAB_BIN:-${CARGO_TARGET_DIR:-target}/debug/inferlab}
HF_PYTHON=${HF_PYTHON:-python3}
FIXTURES=${INFERLAB_FIXTURES:-tests/fixtures/gpt2}
WORK=${WORK:-$HOME/.cache/inferlab/compare-cpu}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$WORK" "$OUT"
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

model="$WORK/$SHAPE"
if [ ! -f "$model/model.safetensors" ]; then
  echo "== a random $SHAPE (seed 0) into $model"
  "$HF_PYTHON" scripts/hf_decode_bench.py --config "$SHAPE" --save "$model" --tokenizer "$FIXTURES/tokenizer/tokenizer.json"
fi

if ! "$HF_PYTHON" -c "import llama_cpp" 2>/dev/null; then
  echo "== pip install llama-cpp-python==$LLAMA_CPP_PYTHON (builds llama.cpp from source)"
  "$HF_PYTHON" -m pip install --quiet "llama-cpp-python==$LLAMA_CPP_PYTHON"
fi
src="$WORK/llama-cpp-python-$LLAMA_CPP_PYTHON"
if [ ! -d "$src" ]; then
  echo "== llama.cpp's source (for its GGUF converter)"
  "$HF_PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$WORK" "llama-cpp-python==$LLAMA_CPP_PYTHON"
  tar -xzf "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$WORK"
  mv "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON" "$src"
fi
for type in f32 f16 q8_0; do
  if [ ! -f "$WORK/$SHAPE-$type.gguf" ]; then
    echo "== GGUF $type"
    PYTHONPATH="$src/vendor/llama.cpp/gguf-py" "$HF_PYTHON" "$src/vendor/llama.cpp/convert_hf_to_gguf.py" "$model" --outtype "$type" --outfile "$WORK/$SHAPE-$type.gguf" >"$OUT/convert-$type.log" 2>&1 ||
      { tail -20 "$OUT/convert-$type.log"; exit 1; }
  fi
done

echo "== runs ($THREADS threads each, prompt $PROMPT, $NEW new tokens)"
for batch in $BATCHES; do
  "$BIN" bench decode --model "$model" --batch "$batch" --prompt-tokens "$PROMPT" --new-tokens "$NEW" --device cpu --json >"$OUT/inferlab-b$batch.json"
  "$BIN" bench decode --model "$model" --batch "$batch" --prompt-tokens "$PROMPT" --new-tokens "$NEW" --device cpu --dtype f16 --json >"$OUT/inferlab-f16-b$batch.json"
  "$BIN" bench decode --model "$model" --batch "$batch" --prompt-tokens "$PROMPT" --new-tokens "$NEW" --device cpu --dtype int8 --json >"$OUT/inferlab-int8-b$batch.json"
  "$HF_PYTHON" scripts/hf_decode_bench.py --model "$model" --batch "$batch" --prompt-tokens "$PROMPT" --new-tokens "$NEW" >"$OUT/hf-b$batch.json"
  for type in f32 f16 q8_0; do
    "$HF_PYTHON" scripts/llama_decode_bench.py --gguf "$WORK/$SHAPE-$type.gguf" --threads "$THREADS" --batch "$batch" --prompt-tokens "$PROMPT" --new-tokens "$NEW" >"$OUT/llama-$type-b$batch.json"
  done
done

"$HF_PYTHON" - "$OUT" "$SHAPE" "$THREADS" <<'PY'
import json, pathlib, sys
out, shape, threads = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = []
for path in sorted(out.glob("*-b*.json")):
    engine, batch = path.stem.rsplit("-b", 1)
    r = json.loads(path.read_text())
    runs.append({"engine": engine, "batch": int(batch), "decode_tokens_per_s": r["decode_tokens_per_s"], "ttft_ms": r["ttft_ms"], "impl": r.get("impl", "inferlab bench decode")})
base = {r["batch"]: r["decode_tokens_per_s"] for r in runs if r["engine"] == "inferlab"}
for r in runs:
    r["vs_inferlab"] = r["decode_tokens_per_s"] / base[r["batch"]] if base.get(r["batch"]) else None
runs.sort(key=lambda r: (r["batch"], r["engine"] != "inferlab", r["engine"]))
print(f"\n{shape}, {threads} threads: greedy decode tokens/s over all rows (ratio to inferlab)")
print(f"{'batch':>5}  {'engine':<12} {'tok/s':>8} {'ratio':>6} {'TTFT ms':>8}")
for r in runs:
    print(f"{r['batch']:>5}  {r['engine']:<12} {r['decode_tokens_per_s']:>8.1f} {r['vs_inferlab']:>6.2f} {r['ttft_ms']:>8.1f}")
(out / "compare_cpu.json").write_text(json.dumps({"shape": shape, "threads": int(threads), "runs": runs}, indent=1))
print(f"\nJSON: {out / 'compare_cpu.json'}")
PY
