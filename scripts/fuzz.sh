#!/usr/bin/env bash
# Fuzzes what comes from outside — the model loader (config.json + safetensors) and the
# completions request parser — for longer than the test suite does: the proptest targets of
# tests/fuzz.rs with many more cases, for at most $FUZZ_SECONDS.
#
#   scripts/fuzz.sh                 # 1,000,000 cases per target (~1 min here), at most 10 minutes
#   CASES=50000000 FUZZ_SECONDS=3600 scripts/fuzz.sh
#
# A failure prints the smallest input proptest could shrink it to; add it to tests/fuzz/ (or a
# case in tests/serve.rs) once fixed, keeping the corpus small.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${INFERLAB_TARGET:-/var/cache/inferlab/target}}"
export PROPTEST_CASES="${CASES:-1000000}"
timeout --foreground "${FUZZ_SECONDS:-600}" cargo test --locked --test fuzz -- --nocapture
