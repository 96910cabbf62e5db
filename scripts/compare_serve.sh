#!/usr/bin/env bash
# Serving side by side on one machine, under one load from `inferlab bench serve`:
#   inferlab serve (continuous batching), inferlab serve --policy static, and HF transformers
#   served naively (scripts/hf_server.py: one request at a time).
# Prints each run's JSON and a table of throughput and latency with ratios to static and HF.
#
#   scripts/compare_serve.sh     # random:distilgpt2, 64 requests from 16 clients, long-tail outputs 8..128
#   MODEL=random:gpt2 REQUESTS=128 scripts/compare_serve.sh
#
# Needs a built inferlab ($INFERLAB_BIN, default: cargo's debug binary) and, for the HF side,
# a Python with torch, transformers, fastapi and uvicorn ($HF_PYTHON; skipped if it has none).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-random:distilgpt2}
TOKENIZER=${TOKENIZER:-${INFERLAB_FIXTURES:-tests/fixtures/gpt2}/tokenizer}
REQUESTS=${REQUESTS:-64}
CONCURRENCY=${CONCURRENCY:-16}
RATE=${RATE:-0}
PROMPT_LEN=${PROMPT_LEN:-16..64}
OUTPUT_LEN=${OUTPUT_LEN:-8..128}
LENGTHS=${LENGTHS:-long-tail}
MAX_BATCH=${MAX_BATCH:-16}
THREADS=${THREADS:-2}
BIN=${INFERLAB_BIN:-${CARGO_TARGET_DIR:-target}/debug/inferlab}
HF_PYTHON=${HF_PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
PORT=${PORT:-8100}

export RAYON_NUM_THREADS=$THREADS
server_pid=
stop_server() { if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; fi; server_pid=; }
trap stop_server EXIT

wait_ready() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "the server died; see $OUT/$1.log" >&2; return 1; }
    sleep 0.5
  done
  echo "the server never became ready" >&2; return 1
}

load() {
  "$BIN" bench serve --url "http://127.0.0.1:$PORT" --requests "$REQUESTS" --concurrency "$CONCURRENCY" --rate "$RATE" \
    --prompt-len "$PROMPT_LEN" --output-len "$OUTPUT_LEN" --lengths "$LENGTHS" --workload-seed 1 --json > "$OUT/$1.json"
  echo "== $1"; cat "$OUT/$1.json"
}

metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

for policy in continuous static; do
  "$BIN" serve --model "$MODEL" --tokenizer "$TOKENIZER" --port "$PORT" --policy "$policy" --max-batch "$MAX_BATCH" \
    --max-queue 100000 > "$OUT/$policy.log" 2>&1 &
  server_pid=$!
  wait_ready "$policy"
  if [ "$policy" = continuous ]; then
    # Server overhead at idle: one request at a time; the engine's histogram of the time from
    # the HTTP request's arrival to the start of its first step.
    "$BIN" bench serve --url "http://127.0.0.1:$PORT" --requests 20 --concurrency 1 --rate 0 --output-len 2..2 --json > "$OUT/idle.json"
    echo "== idle: request → first engine step, mean over 20 requests: $(python3 -c "print(f'{1000 * $(metric inferlab_admission_latency_seconds_sum) / $(metric inferlab_admission_latency_seconds_count):.3f} ms')")"
  fi
  load "$policy"
  stop_server
done

if "$HF_PYTHON" -c 'import torch, transformers, fastapi, uvicorn' 2>/dev/null; then
  "$HF_PYTHON" scripts/hf_server.py --model "$MODEL" --tokenizer "$TOKENIZER" --port "$PORT" --threads "$THREADS" > "$OUT/hf.log" 2>&1 &
  server_pid=$!
  wait_ready hf
  load hf
  stop_server
else
  echo "== hf: skipped ($HF_PYTHON lacks torch/transformers/fastapi/uvicorn)"
fi

python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
runs = {n: json.load(open(f"{out}/{n}.json")) for n in ("continuous", "static", "hf") if os.path.exists(f"{out}/{n}.json")}
print(f"\n{'server':<12}{'req/s':>8}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'lat p50':>10}{'lat p99':>10}  (ms)")
for n, r in runs.items():
    print(f"{n:<12}{r['throughput_rps']:>8.2f}{r['output_tokens_per_s']:>9.1f}{r['ttft_ms']['p50']:>10.0f}{r['ttft_ms']['p99']:>10.0f}{r['latency_ms']['p50']:>10.0f}{r['latency_ms']['p99']:>10.0f}")
c = runs["continuous"]
ratios = {f"continuous/{n}": {"throughput": c["output_tokens_per_s"] / r["output_tokens_per_s"], "p99_latency": c["latency_ms"]["p99"] / r["latency_ms"]["p99"]} for n, r in runs.items() if n != "continuous"}
print(json.dumps({"ratios": ratios, "out": out}, indent=2))
EOF
