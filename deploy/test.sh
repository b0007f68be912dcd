#!/usr/bin/env bash
# test.sh — the README's test command: installs what is needed, builds with
# warnings as errors, and runs the whole suite (unit, end-to-end, browser).
# Exit status is meson test's. Extra arguments go to `meson test`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash deploy/setup.sh
build=${BREWSLM_BUILD_DIR:-build-test}
if [ -d "$build" ]; then
    meson setup --reconfigure "$build" -Dwerror=true >/dev/null
else
    meson setup "$build" -Dwerror=true -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$build"
status=0
meson test -C "$build" --print-errorlogs --num-processes 2 "$@" || status=$?
# A plain closing line that any CI reader understands.
python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
ok = fail = skip = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): ok += 1
        elif r == "SKIP": skip += 1
        else: fail += 1
except OSError:
    fail += 1
print(f"{ok} passed, {fail} failed, {skip} skipped")
PY
exit $status
