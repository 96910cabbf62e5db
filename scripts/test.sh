#!/usr/bin/env bash
# Runs the whole test suite: the engine and command-line tests (`cargo test --locked`, every
# parity check on the CPU device and on wgpu) and the browser tests (the app built with trunk,
# driven by Playwright in headless chromium). Installs what is missing first: the browser
# build's tools (as scripts/dev.sh), and, where apt exists and we are root or have sudo, the
# Vulkan CPU driver (lavapipe, for wgpu without a GPU) and chromium. What cannot be installed
# is skipped, loudly; under CI (CI=true) nothing may be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
. scripts/setup.sh

# Under CI nothing may be cut from outside either: an inherited INFERLAB_SKIP_WGPU would drop the
# wgpu half of every parity test (the tests refuse it under CI too), and PROPTEST_CASES changes
# the fuzz targets' case count (it can only raise it; CI runs the suite's own 2,000).
if [ -n "${CI:-}" ]; then
  for inherited in INFERLAB_SKIP_WGPU PROPTEST_CASES; do
    [ -z "${!inherited+set}" ] || die "CI must run everything, but $inherited is set in the environment: unset it"
  done
fi

# The HF fixtures ship in the repository; INFERLAB_FIXTURES points the tests at another copy.
export INFERLAB_FIXTURES="${INFERLAB_FIXTURES:-$PWD/tests/fixtures/gpt2}"
[ -f "$INFERLAB_FIXTURES/gpt2-tiny/golden.json" ] ||
  die "no fixtures at $INFERLAB_FIXTURES (INFERLAB_FIXTURES names a folder laid out as tests/fixtures/gpt2)"
# wgpu probes Wayland, which complains without a runtime dir; give it one.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM

# Not `grep -q`: it exits at the first match, ldconfig then dies of SIGPIPE and, under
# pipefail, the check fails at random (a CI run once skipped wgpu that way).
has_vulkan() {
  ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null &&
    { compgen -G '/usr/share/vulkan/icd.d/*.json' || compgen -G '/etc/vulkan/icd.d/*.json'; } >/dev/null
}

# System packages, each only if missing.
wanted=()
has_vulkan || wanted+=(mesa-vulkan-drivers libvulkan1)
[ -x "$CHROMIUM" ] || wanted+=(chromium fonts-dejavu-core)
command -v npm >/dev/null || wanted+=(nodejs npm)
if [ ${#wanted[@]} -gt 0 ]; then
  say "installing system packages: ${wanted[*]} (Vulkan on the CPU for wgpu, chromium for the browser tests; ~2 min, once)"
  apt_install "${wanted[@]}" ||
    warn "cannot install ${wanted[*]} here (no apt, or not root and no sudo): install them by hand for the full suite"
fi

skipped=()
if ! has_vulkan; then
  warn "NO VULKAN DRIVER: the wgpu half of every parity test is SKIPPED (install mesa-vulkan-drivers libvulkan1)"
  export INFERLAB_SKIP_WGPU=1
  skipped+=("wgpu tests")
fi
browser=1
if [ ! -x "$CHROMIUM" ] || ! command -v npm >/dev/null; then
  warn "NO CHROMIUM OR NPM: the browser tests are SKIPPED (install chromium and nodejs/npm)"
  browser=0
  skipped+=("browser tests")
fi
[ -n "${INFERLAB_E2E_ONLY:-}" ] && skipped+=("browser tests not matching INFERLAB_E2E_ONLY")
if [ ${#skipped[@]} -gt 0 ] && [ -n "${CI:-}" ]; then
  die "CI must run everything, but these would be skipped: ${skipped[*]}"
fi

say "cargo test --locked (engine, command line, kernels; cpu and wgpu)"
cargo test --locked
if [ "$browser" = 1 ]; then
  ensure_web_tools
  say "browser tests: trunk build + Playwright in headless chromium"
  scripts/browser_test.sh
fi
if [ ${#skipped[@]} -gt 0 ]; then
  warn "PASSED, BUT SKIPPED: ${skipped[*]} (see the messages above)"
fi
