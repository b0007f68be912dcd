#!/usr/bin/env bash
# setup.sh — installs everything brewslm needs on a fresh Debian 12 machine
# (build, run and test), then returns. Safe to run again: packages already
# present are not reinstalled, and apt is only touched when something is missing.
#
#   bash deploy/setup.sh            # build + run + test dependencies
#   BREWSLM_SETUP_TORCH=1 bash deploy/setup.sh   # also python3-torch (golden files, benchmarks)
set -euo pipefail

packages=(
    # build
    gcc libc6-dev meson ninja-build pkg-config
    # libraries (the design's dependencies)
    libopenblas-dev libcjson-dev libyaml-dev libmicrohttpd-dev libsqlite3-dev libuv1-dev
    libpcre2-dev zlib1g-dev
    # the dashboard's charts, served from the system path
    libjs-chart.js
    # tests: HTTP clients, database shell, end-to-end scripts, browser, load, fuzzing
    curl sqlite3 python3 chromium wrk clang libclang-rt-14-dev
)
if [ "${BREWSLM_SETUP_TORCH:-0}" = 1 ]; then
    packages+=(python3-torch python3-numpy)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm drive the browser test; any Node >= 18 works (Debian's too).
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The browser test's one npm dependency (playwright-core, driving Debian's
# chromium; no browser download), pinned by tests/browser/package-lock.json.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/tests/browser/package.json" ] && [ ! -d "$here/tests/browser/node_modules/playwright-core" ]; then
    echo "setup: npm ci in tests/browser" >&2
    (cd "$here/tests/browser" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; })
fi
# The tokenizer parity test's references (gpt-3-encoder, @huggingface/tokenizers,
# @huggingface/jinja: plain JavaScript, no binaries), pinned by
# tests/hftok/package-lock.json; without them hftok_parity is skipped.
if [ -f "$here/tests/hftok/package.json" ] && [ ! -d "$here/tests/hftok/node_modules/@huggingface/jinja" ]; then
    echo "setup: npm ci in tests/hftok" >&2
    (cd "$here/tests/hftok" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; })
fi
echo "setup: all dependencies present" >&2
