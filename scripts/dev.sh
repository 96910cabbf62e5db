#!/usr/bin/env bash
# Opens the lab: installs what the browser build needs (only what is missing), then runs
# `trunk serve --open` with any arguments passed through (e.g. --port 8081, --release).
# A second run starts serving in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh

ensure_web_tools
say "trunk serve --open $* (the first build compiles burn for wasm: ~15 min on 2 cores; later builds take seconds)"
say "no network? press \"Start with the demo pair\" in the page: it needs no download"
exec trunk serve --open "$@"
