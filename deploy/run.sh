#!/usr/bin/env bash
# run.sh — the README's quick start: installs what is needed, builds, writes the
# example preference data under ./var/data/example, prints the curl line that
# submits the example DPO job, and runs brewslmd in the foreground on its
# defaults (127.0.0.1:8080, SQLite at ./var/brewslm.db). Ctrl-C stops it
# (running jobs checkpoint and resume on the next start).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash deploy/setup.sh
build=${BREWSLM_BUILD_DIR:-build}
[ -d "$build" ] || meson setup "$build" -Dbuildtype=release >/dev/null
ninja -C "$build" >/dev/null
mkdir -p var/data/example
[ -f var/data/example/prefs.jsonl ] || python3 deploy/example/make_data.py var/data/example
listen=${BREWSLM_LISTEN:-127.0.0.1:8080}
cat <<MSG

brewslmd is starting on http://$listen (dashboard: http://$listen/).
Submit the lesson's example DPO job from another terminal with:

  curl -s -X POST http://$listen/v1/jobs -H 'Content-Type: application/yaml' --data-binary @deploy/example/recipe.yaml

then watch it:  curl -N http://$listen/v1/jobs/JOB_ID/events

MSG
exec "$build/daemon/brewslmd" --listen "$listen" --db var/brewslm.db --data-root var/data --state-dir var
