# Sourced by scripts/dev.sh and scripts/test.sh: installs, only where missing, the tools that
# building the browser app needs, at the versions trunk expects (it then never downloads
# tools of its own). Each step says what it installs, why, and roughly how long it takes;
# a step that cannot run says what to do by hand and stops the script.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;33m!!! %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mxxx %s\033[0m\n' "$*" >&2; exit 1; }

TRUNK_VERSION=0.21.14
# wasm-bindgen-cli must equal the wasm-bindgen crate in Cargo.lock, byte for byte.
WASM_BINDGEN_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif sudo -n true 2>/dev/null; then sudo "$@"
  else return 1; fi
}

# Debian packages, where apt exists and we are root or have sudo; fails otherwise.
apt_install() {
  command -v apt-get >/dev/null && as_root true || return 1
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The `desktop` feature (`inferlab app --window`) links the system's web view: WebKitGTK 4.1 on
# Linux (macOS and Windows have theirs). Installed only where that feature is built.
ensure_desktop_packages() {
  [ "$(uname -s)" = Linux ] || return 0
  pkg-config --exists webkit2gtk-4.1 2>/dev/null && return
  say "installing WebKitGTK 4.1's development files (the desktop feature's window; ~1 min, once)"
  apt_install libwebkit2gtk-4.1-dev pkg-config ||
    die "the desktop feature needs WebKitGTK 4.1's development files: install libwebkit2gtk-4.1-dev (Debian, Ubuntu) or webkit2gtk4.1-devel (Fedora)"
}

# rustup and cargo: the only thing a user must have before running these scripts.
need_rust() {
  command -v cargo >/dev/null && command -v rustup >/dev/null ||
    die "cargo and rustup are needed: install Rust from https://rustup.rs, then run this again"
}

ensure_wasm_target() {
  rustup target list --installed | grep -x wasm32-unknown-unknown >/dev/null && return
  say "adding the Rust target wasm32-unknown-unknown (the browser build; ~1 min, once)"
  rustup target add wasm32-unknown-unknown ||
    die "could not add the wasm32 target; without network, run 'rustup target add wasm32-unknown-unknown' where you have it"
}

ensure_trunk() {
  trunk --version 2>/dev/null | grep "$TRUNK_VERSION" >/dev/null && return
  say "installing trunk $TRUNK_VERSION (builds and serves the browser app; ~13 min on 2 cores, once)"
  cargo install --locked trunk --version "$TRUNK_VERSION" ||
    die "could not install trunk; run 'cargo install --locked trunk --version $TRUNK_VERSION' by hand (it needs crates.io)"
}

ensure_wasm_bindgen() {
  wasm-bindgen --version 2>/dev/null | grep "$WASM_BINDGEN_VERSION" >/dev/null && return
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (= Cargo.lock's wasm-bindgen; ~5 min, once)"
  # Not --locked: its own lock file pins a yanked crate.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" ||
    die "could not install wasm-bindgen-cli; run 'cargo install wasm-bindgen-cli --version $WASM_BINDGEN_VERSION' by hand"
}

# npm packages of tests/e2e: wasm-opt (npm binaryen 132; Debian's 108 breaks the output),
# playwright-core and axe-core for the browser tests. Installed again whenever
# package-lock.json changed since the last install. Their bin folder goes on PATH.
ensure_npm_packages() {
  if ! cmp -s tests/e2e/package-lock.json tests/e2e/node_modules/.installed-lock 2>/dev/null; then
    command -v npm >/dev/null ||
      die "npm is needed for wasm-opt (binaryen) and the browser tests: install Node.js 18+ with npm (e.g. 'apt-get install nodejs npm'), then run this again"
    say "installing npm packages in tests/e2e: binaryen (wasm-opt), playwright-core, axe-core (~1 min, once)"
    (cd tests/e2e && npm ci --no-audit --no-fund && cp package-lock.json node_modules/.installed-lock) ||
      die "'npm ci' in tests/e2e failed (no network to the npm registry?); run it by hand where you have one"
  fi
  export PATH="$PWD/tests/e2e/node_modules/.bin:$PATH"
}

# Everything `trunk serve` / `trunk build` needs.
ensure_web_tools() {
  need_rust
  ensure_wasm_target
  ensure_trunk
  ensure_wasm_bindgen
  ensure_npm_packages
}

# The web app into DIR with trunk: the release build (what ships), or PROFILE=dev's (the tests'
# build, minutes when burn's wasm build is cached). Installs trunk's tools first.
build_web_app() {
  ensure_web_tools
  say "trunk build (the web app, ${PROFILE:-release} profile) into $1"
  if [ "${PROFILE:-release}" = release ]; then trunk build --release --locked --dist "$1"
  else trunk build --locked --dist "$1"; fi
}

# SHA-256 sums as sha256sum prints and checks them (-c); macOS has shasum instead.
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi; }

MDBOOK_VERSION=0.5.4
# mdbook builds the book in docs/ (scripts/check_book.sh, scripts/build_site.sh). Without its
# `serve`/`watch` features: a smaller build; `mdbook build` is all the scripts use.
ensure_mdbook() {
  mdbook --version 2>/dev/null | grep "v$MDBOOK_VERSION" >/dev/null && return
  need_rust
  say "installing mdbook $MDBOOK_VERSION (builds the book in docs/; ~3 min on 2 cores, once)"
  cargo install --locked mdbook --version "$MDBOOK_VERSION" --no-default-features --features search ||
    die "could not install mdbook; run 'cargo install --locked mdbook --version $MDBOOK_VERSION' by hand (it needs crates.io)"
}
