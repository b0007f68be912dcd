#!/usr/bin/env bash
# fuzz.sh — builds the libFuzzer targets (tests/fuzz) with clang in
# build-fuzz and runs the 'fuzz' test suite: every seed and regression input
# replayed, then each target fuzzed for 20 s. A crash fails its test; the
# input is saved under build-fuzz/tests/fuzz/artifacts/<target>/ (add it to
# tests/fuzz/regressions/<target>/ once fixed).
#
#   deploy/fuzz.sh                  the CI run (8 targets, about 4 minutes from scratch on 2
#                                   cores: 45 s of build, 177 s of tests)
#   FUZZ_SECONDS=600 deploy/fuzz.sh a longer run of each target
#
# Environment: BREWSLM_FUZZ_BUILD_DIR (default build-fuzz), FUZZ_SECONDS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BREWSLM_FUZZ_BUILD_DIR:-build-fuzz}
if [ -d "$build/meson-info" ]; then
    meson setup --reconfigure "$build" -Dfuzz=true >/dev/null
else
    CC=clang meson setup "$build" -Dfuzz=true >/dev/null
fi
# Only the fuzz targets (and the instrumented trainer, API and storage code they link).
ninja -C "$build" tests/fuzz/fuzz_recipe tests/fuzz/fuzz_data tests/fuzz/fuzz_tok \
    tests/fuzz/fuzz_ckpt tests/fuzz/fuzz_http tests/fuzz/fuzz_safetensors tests/fuzz/fuzz_hfconfig \
    tests/fuzz/fuzz_hftok
args=()
if [ -n "${FUZZ_SECONDS:-}" ]; then
    export FUZZ_SECONDS
    args+=(--timeout-multiplier 0) # no meson timeout on a long run
fi
start=$(date +%s)
status=0
meson test -C "$build" --no-rebuild --suite fuzz --print-errorlogs "${args[@]}" || status=$?
echo "fuzz: suite took $(($(date +%s) - start)) s"
exit $status
