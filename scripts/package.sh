#!/usr/bin/env bash
# A release bundle: the web app compiled into the native binary (the `embed` feature), so that
# the binary alone is the whole lab, and the window (`desktop`, `inferlab app --window`) where the
# system has a web view of its own; packed with the README, the licences and checksums; then the
# bundle checked as a user would meet it (scripts/check_bundle.sh: unpacked alone into an empty
# folder, `inferlab app --no-open` serves the lab and its demo tokenizer).
#
#   scripts/package.sh               # trunk build --release, cargo build --release --features $FEATURES
#   CUDA=1 scripts/package.sh        # the CUDA variant: scripts/build_cuda.sh with the same features
#   FEATURES=embed,desktop scripts/package.sh   # Linux with the window (-desktop in the name)
#   PROFILE=dev FEATURES=embed INFERLAB_DIST=dist scripts/package.sh
#                                    # what CI runs: the test build's app and profile (minutes, not the
#                                    # ~30 of a cold release build); the same steps, a bigger binary
#
# FEATURES defaults to embed,desktop on macOS and Windows (WKWebView, WebView2 come with the
# system) and to embed on Linux: a desktop build links WebKitGTK, which a GPU server lacks.
#
# Writes $OUT (default target-pkg/) inferlab-<version>-<target>[-desktop][-cuda].tar.gz and its .sha256;
# inside, inferlab-<version>-<target>/ holds inferlab, README.md, LICENSE-MIT, LICENSE-APACHE and
# SHA256SUMS. The Release workflow (.github/workflows/release.yml) runs this on each OS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh
PROFILE=${PROFILE:-release}
OUT=${OUT:-target-pkg}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
triple=$(rustc -vV | sed -n 's/^host: //p')
case "$triple" in
  *linux*) FEATURES=${FEATURES:-embed}; [[ $FEATURES != *desktop* ]] || desktop_suffix=-desktop ;;
  *) FEATURES=${FEATURES:-embed,desktop} ;;
esac
name="inferlab-$version-$triple${desktop_suffix:-}${CUDA:+-cuda}"
[[ $FEATURES != *desktop* ]] || ensure_desktop_packages

# The web app, unless a built one is named. `embed` compiles in dist/ as it is at build time.
if [ -n "${INFERLAB_DIST:-}" ]; then
  [ "$(cd "$INFERLAB_DIST" && pwd -P)" = "$(mkdir -p dist && cd dist && pwd -P)" ] || { rm -rf dist && cp -r "$INFERLAB_DIST" dist; }
else
  build_web_app dist
fi
[ -f dist/index.html ] || die "no dist/index.html: the web app did not build"

if [ -n "${CUDA:-}" ]; then
  EXTRA_FEATURES=$FEATURES scripts/build_cuda.sh
  bin=target-cuda/inferlab
elif [ "$PROFILE" = release ]; then
  say "cargo build --release --features $FEATURES"
  cargo build --release --locked --features "$FEATURES" --bin inferlab
  bin="$target_dir/release/inferlab"
else
  # As the tests build it: `cargo build` would resolve features without the dev-dependencies
  # and rebuild burn (scripts/browser_test.sh).
  say "cargo test --no-run --features $FEATURES (the dev binary, as the tests build it)"
  cargo test --locked --features "$FEATURES" --no-run --test app
  bin="$target_dir/debug/inferlab"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
exe=inferlab
case "$triple" in *windows*) exe=inferlab.exe; bin="$bin.exe" ;; esac
cp "$bin" "$stage/$name/$exe"
cp README.md LICENSE-MIT LICENSE-APACHE "$stage/$name/"
(cd "$stage/$name" && sha256 "$exe" README.md LICENSE-MIT LICENSE-APACHE > SHA256SUMS)
mkdir -p "$OUT"
tar -C "$stage" -czf "$OUT/$name.tar.gz" "$name"
(cd "$OUT" && sha256 "$name.tar.gz" > "$name.tar.gz.sha256")
say "$OUT/$name.tar.gz ($(du -h "$OUT/$name.tar.gz" | cut -f1); binary $(du -h "$bin" | cut -f1))"

scripts/check_bundle.sh "$OUT/$name.tar.gz"
