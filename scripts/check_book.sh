#!/usr/bin/env bash
# Builds the book (docs/, mdBook) into docs/book and fails on a broken internal link: a chapter,
# image or #anchor that does not exist. CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh
ensure_mdbook
mdbook build docs
python3 scripts/book_links.py docs/book
