#!/usr/bin/env bash
# `inferlab app --window` tried as a user would, under Xvfb: the window opens, its page connects
# to the native engine and loads a model, Ctrl+Enter in the prompt generates, and a screenshot of
# the window is taken (the book's picture of it). Builds the `desktop` feature (with `embed`,
# so the window's page comes from the binary) as the tests build it.
#
#   scripts/check_window.sh [SCREENSHOT]   # default: docs/src/images/app-window.png
#
# Needs WebKitGTK 4.1's development files, Xvfb, xdotool and ImageMagick's `import` (Debian:
# libwebkit2gtk-4.1-dev xvfb xauth xdotool imagemagick; installed here where apt and root are).
# Not run by CI (a second build of the binary and a WebKitGTK start, minutes); CI checks the
# feature with clippy.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh
shot=$(realpath -m "${1:-docs/src/images/app-window.png}")
ensure_desktop_packages
command -v Xvfb >/dev/null && command -v xdotool >/dev/null && command -v import >/dev/null && command -v xdpyinfo >/dev/null ||
  apt_install xvfb xauth xdotool imagemagick x11-utils || die "install xvfb, xdotool, imagemagick and x11-utils"
[ -f dist/index.html ] || PROFILE=dev build_web_app dist
say "cargo test --no-run --features desktop,embed (the binary, as the tests build it)"
cargo test --locked --features desktop,embed --no-run --test app
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/inferlab"
fixtures="${INFERLAB_FIXTURES:-$PWD/tests/fixtures/gpt2}"

work=$(mktemp -d)
display=:$((90 + RANDOM % 100))
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp > "$work/xvfb.log" 2>&1 &
pids+=($!)
export DISPLAY=$display
for _ in $(seq 50); do xdpyinfo > /dev/null 2>&1 && break; sleep 0.2; done

# Alone in an empty folder: the page must come from the binary.
cp "$bin" "$work/inferlab"
(cd "$work" && env -u INFERLAB_DIST ./inferlab app --window --device cpu --model "$fixtures/gpt2-tiny" > app.log 2>&1) &
pids+=($!)
wait_for() { # PATTERN SECONDS WHAT
  for _ in $(seq $(($2 * 5))); do grep -q "$1" "$work/app.log" && return; sleep 0.2; done
  cat "$work/app.log"
  die "no $3 within $2 s"
}
wait_for "page 1 connected" 120 "page connected from the window"
wait_for "loaded " 120 "model loaded by the window's page"
window=$(xdotool search --sync --onlyvisible --name '^inferlab$' | head -1)
# No window manager under Xvfb: the keyboard goes where the pointer is; in the page, to the
# prompt (it has autofocus).
xdotool mousemove --window "$window" 640 400
sleep 1
xdotool key ctrl+Return
wait_for "Playground generated" 120 "generation after Ctrl+Enter in the window"
sleep 1
import -window "$window" "$shot"
grep "inferlab app:" "$work/app.log"
say "the window opened, loaded $(sed -n 's/.*loaded \([^ ]*\).*/\1/p' "$work/app.log" | head -1) and generated; screenshot: $shot"
