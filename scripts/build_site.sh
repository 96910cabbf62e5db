#!/usr/bin/env bash
# The static site: the release web app (trunk build --release) with the book beside it, in
# dist/book/, which the app's header links to. Copy dist/ to any static host.
#
#   scripts/build_site.sh [DIST]      # default: dist/
#   PROFILE=dev scripts/build_site.sh DIST   # the app's dev build (CI: the same steps, minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh
dist="$(realpath -m "${1:-dist}")"
ensure_mdbook
build_web_app "$dist"
mdbook build docs --dest-dir "$dist/book"
python3 scripts/book_links.py "$dist/book"
say "the app and the book are in $dist (the book at $dist/book/)"
