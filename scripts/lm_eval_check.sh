#!/usr/bin/env bash
# lm-evaluation-harness against `inferlab serve` (model local-completions: log-likelihoods
# through /v1/completions with echo + logprobs) and against transformers (model hf) on the
# same weights and the local task in tests/lm_eval/; every choice's log-likelihood must agree
# within 1e-3 and the accuracy exactly.
#
#   scripts/lm_eval_check.sh [MODEL_DIR]     (default: the fixtures' gpt2-tiny)
#
# LM_EVAL_PYTHON names a Python with lm-eval[api,hf] and torch; without it a venv is made in
# $LM_EVAL_VENV (default /tmp/inferlab-lm-eval) from PyPI. INFERLAB_BIN names the binary
# (default: the dev build under $CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(realpath "${1:-tests/fixtures/gpt2/gpt2-tiny}")"
bin="${INFERLAB_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/inferlab}"
python="${LM_EVAL_PYTHON:-}"
if [ -z "$python" ]; then
  venv="${LM_EVAL_VENV:-/tmp/inferlab-lm-eval}"
  if [ ! -x "$venv/bin/lm_eval" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "lm-eval[api,hf]==0.4.13" "transformers==5.25.0" torch
  fi
  python="$venv/bin/python"
fi
lm_eval="$(dirname "$python")/lm_eval"
out="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT

"$bin" serve --model "$model" --served-model-name tiny --port 0 > "$out/serve.log" 2>&1 &
server=$!
for _ in $(seq 600); do
  url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$out/serve.log" | head -1)"
  [ -n "$url" ] && curl -sf "$url/health" > /dev/null && break
  sleep 0.2
done
[ -n "$url" ] || { cat "$out/serve.log"; echo "the server did not start" >&2; exit 1; }

export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$lm_eval" run --model local-completions \
  --model_args "model=tiny,base_url=$url/v1/completions,tokenizer_backend=huggingface,tokenizer=$model,num_concurrent=1,max_retries=1" \
  --tasks inferlab_mc --include_path tests/lm_eval --log_samples --output_path "$out/server" > "$out/server.log" 2>&1 \
  || { tail -30 "$out/server.log"; exit 1; }
"$lm_eval" run --model hf --model_args "pretrained=$model,dtype=float32,attn_implementation=eager" --device cpu \
  --tasks inferlab_mc --include_path tests/lm_eval --log_samples --output_path "$out/hf" > "$out/hf.log" 2>&1 \
  || { tail -30 "$out/hf.log"; exit 1; }
"$python" scripts/lm_eval_compare.py "$out/server" "$out/hf" inferlab_mc
