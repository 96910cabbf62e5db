#!/usr/bin/env bash
# Mutation testing with cargo-mutants: does the suite fail when a decision in the code is
# changed (an operator flipped, a branch dropped, a return value replaced)? Each module is
# mutated alone and tested with the tests that cover it. Not part of CI: every mutant is a
# rebuild (about a minute on 2 cores), so a module takes hours; use --shard for a sample.
#
#   scripts/mutants.sh [MODULE...] [-- CARGO_MUTANTS_ARGS...]
#   scripts/mutants.sh blocks -- --shard 0/4      # a quarter of blocks.rs's mutants
#
# MODULE is one of: sampling sliding mask blocks scheduler beam speculative (default: all).
# Results go to mutants.out/<module>/ (caught.txt, missed.txt, unviable.txt, timeout.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh

CARGO_MUTANTS_VERSION=27.1.0
if ! cargo mutants --version 2>/dev/null | grep "$CARGO_MUTANTS_VERSION" >/dev/null; then
  say "installing cargo-mutants $CARGO_MUTANTS_VERSION (~3 min on 2 cores, once)"
  cargo install --locked cargo-mutants --version "$CARGO_MUTANTS_VERSION" ||
    die "could not install cargo-mutants; run 'cargo install --locked cargo-mutants --version $CARGO_MUTANTS_VERSION'"
fi

# Each module: its file, and the tests that cover it (the library's unit tests always run).
declare -A FILE=(
  [sampling]=src/engine/decode/sampling.rs
  [sliding]=src/engine/kv/sliding.rs
  [mask]=src/engine/kv/mask.rs
  [blocks]=src/engine/kv/blocks.rs
  [scheduler]=src/engine/batching/scheduler.rs
  [beam]=src/engine/decode/beam.rs
  [speculative]=src/engine/decode/speculative.rs
)
declare -A TESTS=(
  [sampling]="sampling speculative"
  [sliding]="sliding_window"
  [mask]="sliding_window parity"
  [blocks]="batching"
  [scheduler]="batching"
  [beam]="beam"
  [speculative]="speculative"
)

modules=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  [ -n "${FILE[$1]:-}" ] || die "unknown module $1 (one of: ${!FILE[*]})"
  modules+=("$1")
  shift
done
[ "${1:-}" = "--" ] && shift
[ ${#modules[@]} -gt 0 ] || modules=(sampling sliding mask blocks scheduler beam speculative)

export INFERLAB_FIXTURES="${INFERLAB_FIXTURES:-$PWD/tests/fixtures/gpt2}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# A target directory of its own: the mutants build a copy of the tree under the same crate
# name, and in a shared one their (newer) artifacts would pass for the real tree's. The first
# module pays a full build (~25 min on 2 cores); copy a warm target there to skip it.
export CARGO_TARGET_DIR="${INFERLAB_MUTANTS_TARGET:-/var/cache/inferlab/mutants-target}"
# The decisions mutated here are host code: the CPU half of the tests judges them, and the
# wgpu half (lavapipe) would double every mutant's test time.
export INFERLAB_SKIP_WGPU=1
for module in "${modules[@]}"; do
  test_args=(--cargo-test-arg=--lib)
  for t in ${TESTS[$module]}; do test_args+=("--cargo-test-arg=--test=$t"); done
  say "mutating ${FILE[$module]} (tests: lib ${TESTS[$module]})"
  mkdir -p "mutants.out/$module"
  # The baseline (the unmutated suite) is CI's job; a mutant that does not build is "unviable".
  cargo mutants --file "${FILE[$module]}" "${test_args[@]}" --baseline=skip \
    --timeout 900 --build-timeout 1800 --output "mutants.out/$module" "$@" || true
  for outcome in caught missed unviable timeout; do
    n=$(wc -l <"mutants.out/$module/mutants.out/$outcome.txt" 2>/dev/null) || n=0
    printf "%s %s: %s\n" "$module" "$outcome" "$n"
  done
done
