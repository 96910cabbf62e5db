#!/usr/bin/env bash
# Checks a bundle from scripts/package.sh as a user meets it: unpacked alone into an empty
# folder (no dist/ beside it, none in the working directory), its checksums hold, and
# `inferlab app --no-open` serves the lab from the binary itself: the page, the wasm with its
# content type, the demo tokenizer. Then, where node and chromium are at hand, the browser
# suite's `inferlab app` tests drive that binary (the native engine, the tab's own engine from
# the embedded wasm, the demo model).
#
#   scripts/check_bundle.sh target-pkg/inferlab-<version>-<target>.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
bundle=$(realpath "$1")
here=$PWD
empty=$(mktemp -d)
app_pid=
cleanup() {
  [ -z "$app_pid" ] || kill "$app_pid" 2>/dev/null || true
  rm -rf "$empty"
}
trap cleanup EXIT

(cd "$(dirname "$bundle")" && sha256 -c "$(basename "$bundle").sha256")
tar -C "$empty" -xzf "$bundle"
dir=$(find "$empty" -mindepth 1 -maxdepth 1 -type d)
(cd "$dir" && sha256 -c SHA256SUMS)
exe="$dir/inferlab"
[ -x "$exe" ] || exe="$dir/inferlab.exe"

echo "== $exe app --no-open, alone in $dir"
cd "$dir"
env -u INFERLAB_DIST "$exe" app --no-open --device cpu --port 0 > "$empty/app.log" &
app_pid=$!
for _ in $(seq 100); do grep -q "open http" "$empty/app.log" 2>/dev/null && break; sleep 0.2; done
url=$(grep -o 'open http[^ ]*' "$empty/app.log" | cut -d' ' -f2)
[ -n "$url" ] || { cat "$empty/app.log"; die "inferlab app printed no URL"; }
grep -q "serving the web app built into this binary" "$empty/app.log" ||
  { cat "$empty/app.log"; die "inferlab app did not serve its embedded web app"; }
python3 - "$url" <<'EOF'
import sys, urllib.request, urllib.error
base = sys.argv[1].split("/?")[0]
def get(path):
    with urllib.request.urlopen(base + path) as r:
        return r.headers.get("content-type"), r.read()
kind, page = get(sys.argv[1].removeprefix(base))
assert kind.startswith("text/html") and b"<html" in page.lower(), (kind, page[:200])
kind, wasm = get("/inferlab_bg.wasm")
assert kind == "application/wasm" and wasm[:4] == b"\0asm", (kind, wasm[:8])
kind, tokenizer = get("/demo/target/tokenizer.json")
assert kind == "application/json" and b'"model"' in tokenizer, kind
try:
    get("/no-such-file.js")
    raise SystemExit("a missing file was served")
except urllib.error.HTTPError as e:
    assert e.code == 404, e.code
print(f"served from the binary: index.html, inferlab_bg.wasm ({len(wasm) / 1e6:.1f} MB), the demo pair's tokenizer; 404 for a missing file")
EOF
kill "$app_pid"
app_pid=
cd "$here"

if command -v node >/dev/null && [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && [ -d tests/e2e/node_modules ]; then
  echo "== the browser suite's inferlab app tests, on the bundle's binary (no --dist)"
  INFERLAB_BIN="$exe" INFERLAB_APP_EMBEDDED=1 INFERLAB_E2E_ONLY='^inferlab app' node tests/e2e/browser.test.mjs
else
  echo "== no node, chromium or tests/e2e/node_modules: the browser suite's app tests were not run on the bundle"
  [ -z "${CI:-}" ] || die "CI must run them"
fi
