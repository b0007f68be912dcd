#!/usr/bin/env bash
# sanitize.sh — builds the whole project with AddressSanitizer (leak checking
# included) and UndefinedBehaviorSanitizer in build-asan, then runs the unit
# suite and the end-to-end suite under them. The first report aborts the
# process under test; every report (with its stack) is also written to
# build-asan/sanitizer-reports/ and printed at the end, and any report fails
# the run, including one from a daemon the e2e tests started.
#
#   deploy/sanitize.sh            unit + e2e
#   deploy/sanitize.sh --unit     unit suite only
#
# Environment: BREWSLM_ASAN_BUILD_DIR (default build-asan), CC (default: the
# system compiler). Exit status: non-zero when a build or a suite fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BREWSLM_ASAN_BUILD_DIR:-build-asan}
suites=(unit e2e)
[ "${1:-}" = "--unit" ] && suites=(unit)

opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized -Dwerror=true)
if [ -d "$build/meson-info" ]; then
    meson setup --reconfigure "$build" "${opts[@]}" >/dev/null
else
    meson setup "$build" "${opts[@]}" >/dev/null
fi
ninja -C "$build"

# Reports also go to files: the e2e tests do not look at the daemon's exit
# status or keep its stderr, so a leak reported when brewslmd exits would
# otherwise pass unseen.
reports="$root/$build/sanitizer-reports"
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export OPENBLAS_NUM_THREADS=1

status=0
for suite in "${suites[@]}"; do
    start=$(date +%s)
    # Sanitized code runs 2-4x slower: stretch the per-test timeouts.
    meson test -C "$build" --no-rebuild --suite "$suite" --print-errorlogs --num-processes 2 \
        --timeout-multiplier 4 || status=1
    echo "sanitize: suite $suite took $(($(date +%s) - start)) s"
done
if [ -n "$(ls -A "$reports")" ]; then
    status=1
    for f in "$reports"/*; do
        echo "==== sanitizer report $f"
        cat "$f"
    done
else
    echo "sanitize: no sanitizer reports"
fi
exit $status
