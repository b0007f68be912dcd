#!/usr/bin/env bash
# run.sh — runs one libFuzzer target over its inputs.
#
#   run.sh replay EXE TARGET            run every seed and regression input once
#   run.sh fuzz EXE TARGET [SECONDS] [libFuzzer args...]
#                                       fuzz for SECONDS (default 20), starting
#                                       from the seeds and earlier findings
#
# TARGET is recipe, data, tok, ckpt, http, safetensors, hfconfig or hftok. Inputs: tests/fuzz/corpus/TARGET
# (hand-made), tests/fuzz/regressions/TARGET (past crashes, replayed forever),
# the binary seeds gen_corpus.py writes into the work folder and, for replay
# only, its large regression inputs (gen/TARGET-replay) and the matching files
# of ../shared when present (too large to mutate quickly, fine to run once). The work folder is $FUZZ_WORK or the folder of
# EXE: gen/ holds generated seeds, work/TARGET the inputs libFuzzer found
# (kept between runs), artifacts/TARGET the crashes. FUZZ_SECONDS, when set,
# overrides SECONDS. Exit status: libFuzzer's.
set -euo pipefail

mode=${1:?usage: run.sh replay|fuzz EXE TARGET [SECONDS] [args...]}
exe=${2:?missing EXE}
target=${3:?missing TARGET}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
work=${FUZZ_WORK:-$(dirname "$exe")}
mkdir -p "$work/gen"
"${PYTHON:-python3}" "$here/gen_corpus.py" "$work/gen"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

seed_dirs=()
for d in "$here/corpus/$target" "$work/gen/$target" "$here/regressions/$target"; do
    [ -d "$d" ] && seed_dirs+=("$d")
done
dict=()
[ -f "$here/$target.dict" ] && dict=("-dict=$here/$target.dict")

case "$mode" in
replay)
    files=()
    [ -d "$work/gen/$target-replay" ] && seed_dirs+=("$work/gen/$target-replay")
    for d in "${seed_dirs[@]}"; do
        while IFS= read -r -d '' f; do files+=("$f"); done \
            < <(find "$d" -type f ! -name '*.md' ! -name '.*' -print0 | sort -z)
    done
    shared="$root/../shared"
    case "$target" in
    tok) extra=("$shared/models/aidreams260K-tok512.bin" "$shared/models/llama2-tokenizer.bin") ;;
    ckpt) extra=("$shared/models/aidreams260K.bin" "$shared/models/stories260K.bin") ;;
    recipe) extra=("$root/deploy/example/recipe.yaml") ;;
    *) extra=() ;;
    esac
    for f in "${extra[@]}"; do [ -f "$f" ] && files+=("$f"); done
    [ ${#files[@]} -gt 0 ] || { echo "no inputs for $target" >&2; exit 1; }
    echo "replaying ${#files[@]} inputs through $(basename "$exe")"
    export FUZZ_ALL_CONFIGS=1 # fuzz_data: every input under every setting
    exec "$exe" -rss_limit_mb=2048 -timeout=60 "$@" "${files[@]}"
    ;;
fuzz)
    secs=${1:-20}
    [ $# -gt 0 ] && shift
    secs=${FUZZ_SECONDS:-$secs} # deploy/fuzz.sh's longer runs
    mkdir -p "$work/work/$target" "$work/artifacts/$target"
    # The first folder receives new inputs; the seed folders are only read.
    exec "$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$target/" "${dict[@]}" "$@" \
        "$work/work/$target" "${seed_dirs[@]}"
    ;;
*)
    echo "unknown mode $mode (replay or fuzz)" >&2
    exit 2
    ;;
esac
