#!/usr/bin/env bash
# The CUDA build, tried as a new user would on a machine without an NVIDIA driver: every
# command that takes --device (and `inferlab app`) must say that the driver is missing and
# what to do instead, exit 1, and print no panic. Builds the binary first with
# scripts/build_cuda.sh unless $CUDA_BIN names one. Not in CI (the CUDA build is a second,
# long burn build); run it where no libcuda is installed:
#
#   scripts/check_cuda_no_driver.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
  echo "this machine has an NVIDIA driver (libcuda); run this check on one without" >&2
  exit 2
fi
BIN=${CUDA_BIN:-target-cuda/inferlab}
[ -n "${CUDA_BIN:-}" ] || scripts/build_cuda.sh
MODEL=${INFERLAB_FIXTURES:-tests/fixtures/gpt2}/gpt2-tiny
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

failed=0
check() {
  local name=$1
  shift
  set +e
  timeout 60 "$BIN" "$@" >"$out/stdout" 2>"$out/stderr" </dev/null
  local rc=$?
  set -e
  local err
  err=$(cat "$out/stderr")
  if [ "$rc" = 1 ] && grep -q "no NVIDIA driver" <<<"$err" && grep -q -- "--device wgpu or --device cpu" <<<"$err" && ! grep -q "panicked" <<<"$err"; then
    echo "ok    $name: $(tail -1 <<<"$err")"
  else
    echo "FAIL  $name (exit $rc):"
    sed 's/^/      /' "$out/stderr" | tail -20
    failed=1
  fi
}

echo '{"prompt": "Hello", "max_tokens": 4}' >"$out/requests.jsonl"
echo 'Hello world, once more.' >"$out/text.txt"
check generate generate --model "$MODEL" --prompt "Hello" --max-new-tokens 4 --device cuda
check batch batch --model "$MODEL" --device cuda --requests "$out/requests.jsonl"
check inspect inspect --model "$MODEL" --prompt "Hello" --device cuda
check perplexity perplexity --model "$MODEL" --file "$out/text.txt" --device cuda
check "bench decode" bench decode --model "$MODEL" --device cuda --new-tokens 4
check serve serve --model "$MODEL" --device cuda --port 0
check app app --no-open --device cuda
exit $failed
