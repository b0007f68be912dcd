#!/usr/bin/env bash
# sanitize.sh — builds the whole project with AddressSanitizer (LeakSanitizer
# included) and UndefinedBehaviorSanitizer in build-asan, then runs every test
# suite the normal run has (unit, e2e, reliability, load, browser, hftok and
# any test without a suite) under them. The first report aborts the process
# under test; every report (with its stack) of every instrumented process —
# test binaries, the `brewslm` CLI and the brewslmd daemons that the Python and
# browser tests start — is also written to build-asan/sanitizer-reports/ and
# printed at the end, and any report fails the run, even when the test that
# started the process passed. Leaks are reported at each process's exit;
# deploy/lsan.supp lists the only ones tolerated (inside third-party
# libraries, one reason per entry). The Python and browser tests also fail
# when a brewslmd they stop does not exit 0 on SIGTERM, since a daemon left to
# SIGKILL would skip its leak check. Python, node, chromium, wrk and curl are
# not instrumented.
#
#   deploy/sanitize.sh                  every suite (2-core machine: build 2 min, tests 3 min)
#   deploy/sanitize.sh --unit           unit suite only (the quick check)
#   deploy/sanitize.sh --suite NAME     that suite only (repeatable)
#
# Sanitized code runs 2-4x slower: meson's per-test timeouts are multiplied
# by 4, and BREWSLM_TIME_SCALE (exported, default 3) stretches the waits of
# the Python/node tests that poll for a status within a deadline; what they
# check is unchanged.
#
# Environment: BREWSLM_ASAN_BUILD_DIR (default build-asan), CC (default: the
# system compiler), BREWSLM_TIME_SCALE. Exit status: non-zero when the build
# fails, a test fails or any sanitizer report was written.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${BREWSLM_ASAN_BUILD_DIR:-build-asan}
want=()
while [ $# -gt 0 ]; do
    case "$1" in
    --unit) want+=(unit) ;;
    --suite)
        [ $# -ge 2 ] || { echo "sanitize: --suite needs a name" >&2; exit 2; }
        want+=("$2")
        shift
        ;;
    *) echo "usage: $0 [--unit] [--suite NAME]..." >&2; exit 2 ;;
    esac
    shift
done

opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized -Dwerror=true)
if [ -d "$build/meson-info" ]; then
    meson setup --reconfigure "$build" "${opts[@]}" >/dev/null
else
    meson setup "$build" "${opts[@]}" >/dev/null
fi
ninja -C "$build"

# The suites, in order, from the build's own test list: each test under its
# first suite, a test without a suite under "-", so every test the normal run
# has runs here once.
mapfile -t groups < <(meson introspect "$build" --tests | python3 -c '
import json, sys
order, seen = ["unit", "e2e", "reliability", "hftok", "browser", "load"], {}
for t in json.load(sys.stdin):
    suites = [s.split(":", 1)[1] for s in t["suite"] if ":" in s]
    key = suites[0] if suites else "-"
    seen.setdefault(key, []).append(t["name"])
keys = [k for k in order if k in seen] + sorted(k for k in seen if k not in order)
for k in keys:
    print(k + " " + " ".join(seen[k]))
')
if [ ${#want[@]} -gt 0 ]; then
    sel=()
    for w in "${want[@]}"; do
        found=0
        for g in "${groups[@]}"; do
            [ "${g%% *}" = "$w" ] && { sel+=("$g"); found=1; }
        done
        [ $found = 1 ] || { echo "sanitize: no suite named $w" >&2; exit 2; }
    done
    groups=("${sel[@]}")
fi

# Reports go to files: the Python tests keep a daemon's stderr in a temporary
# folder and do not look at its exit status, so a leak reported when brewslmd
# exits would otherwise pass unseen.
reports="$root/$build/sanitizer-reports"
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$reports/asan"
export LSAN_OPTIONS="suppressions=$root/deploy/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export OPENBLAS_NUM_THREADS=1
export BREWSLM_TIME_SCALE=${BREWSLM_TIME_SCALE:-3}

status=0
t_all=$(date +%s)
for g in "${groups[@]}"; do
    name=${g%% *}
    read -r -a tests <<<"${g#* }"
    [ "$name" = "-" ] && name="(no suite)"
    start=$(date +%s)
    # By name, so a test in two suites runs once.
    meson test -C "$build" --no-rebuild "${tests[@]}" --print-errorlogs --num-processes 2 \
        --timeout-multiplier 4 --logbase "testlog-$(echo "$name" | tr -c 'a-z0-9\n' _)" \
        || status=1
    echo "sanitize: suite $name (${#tests[@]} tests) took $(($(date +%s) - start)) s"
done
echo "sanitize: all selected suites took $(($(date +%s) - t_all)) s"
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
