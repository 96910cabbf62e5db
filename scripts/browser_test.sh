#!/usr/bin/env bash
# Builds the browser app with trunk (dev profile: dependencies optimised, no wasm-opt) and runs
# the Playwright tests in headless Debian chromium against it. Needs trunk, wasm-bindgen-cli
# and `npm ci` in tests/e2e (see README: "Browser app").
set -euo pipefail
cd "$(dirname "$0")/.."
dist="${INFERLAB_DIST:-$PWD/dist}"
trunk build --locked --dist "$dist"
(cd tests/e2e && [ -d node_modules ] || npm ci --no-audit --no-fund)
INFERLAB_DIST="$dist" node tests/e2e/browser.test.mjs
