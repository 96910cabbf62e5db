#!/usr/bin/env bash
# Builds the browser app with trunk (dev profile: dependencies optimised, no wasm-opt) and runs
# the Playwright tests in headless Debian chromium against it, and against `inferlab app`. Needs trunk and
# wasm-bindgen-cli (see README: "Browser app"); installs tests/e2e's npm packages if they changed.
set -euo pipefail
cd "$(dirname "$0")/.."
dist="${INFERLAB_DIST:-$PWD/dist}"
trunk build --locked --dist "$dist"
source scripts/setup.sh
ensure_npm_packages
# The native binary for the `inferlab app` tests, as `cargo test` builds it (a no-op after it;
# `cargo build` would resolve features without the dev-dependencies and rebuild burn).
cargo test --locked --no-run
bin="${INFERLAB_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/inferlab}"
INFERLAB_DIST="$dist" INFERLAB_BIN="$bin" node tests/e2e/browser.test.mjs
