#!/bin/sh
# run_http.sh — the HTTP benchmark of issue 5: GET /v1/jobs/{id} throughput and
# latency of brewslmd against a bare libmicrohttpd server (tests/bench/http/http_bare.c,
# the daemon's exact MHD flags and options, answering the same job object's bytes),
# on loopback, with wrk. From the repository root:
#
#   tests/bench/http/run_http.sh            # about 2 minutes
#   HTTP_BENCH_SECONDS=5 HTTP_BENCH_ROUNDS=1 tests/bench/http/run_http.sh   # quick look
#
# Builds nothing: it runs $BREWSLM_BUILD/daemon/brewslmd and $BREWSLM_BUILD/tests/http_bare
# (BREWSLM_BUILD defaults to build-httpbench; `meson setup build-httpbench
# -Dbuildtype=release && ninja -C build-httpbench`). Steps:
#   1. brewslmd on 127.0.0.1:0 with a temporary state folder; a 2-step DPO job is
#      submitted and run to `succeeded`, so the poll returns a full job object.
#   2. http_bare serves that object's exact bytes (fetched from brewslmd).
#   3. Idle: HTTP_BENCH_ROUNDS (3) rounds, alternating, of
#      `wrk -t2 -c32 -d${HTTP_BENCH_SECONDS}s --latency` (10 s) against each; the medians
#      of requests/s give the ratio, which must be >= HTTP_BENCH_MIN_RATIO (0.8).
#   4. Training: a long DPO job (dim 256, 4 layers, batches of 8 pairs, BLAS threads =
#      cores: the daemon's default) runs while wrk polls it the same way, then the bare
#      server under the same load; the trainer's steps/s, the daemon's cores and the
#      machine's busy share (/proc/stat) are recorded alone and while polled. Then the
#      job is cancelled.
# Prints a table; writes tests/bench/results/http-<UTC stamp>.json and .md (git-ignored).
# Exit 0 when every answer was 2xx with no socket error and the ratio holds; 1 otherwise.
# Loopback only. Every wait is bounded, every server runs under timeout(1) and is killed
# by the trap on exit, and wrk itself runs under timeout(1).
set -eu

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT"
BUILD=${BREWSLM_BUILD:-build-httpbench}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
SECS=${HTTP_BENCH_SECONDS:-10}
ROUNDS=${HTTP_BENCH_ROUNDS:-3}
MIN_RATIO=${HTTP_BENCH_MIN_RATIO:-0.8}
THREADS=2
CONNS=32
DAEMON="$BUILD/daemon/brewslmd"
BARE="$BUILD/tests/http_bare"
LUA="$ROOT/tests/bench/http/report.lua"

die() {
    echo "run_http.sh: $*" >&2
    exit 1
}
for b in "$DAEMON" "$BARE"; do
    [ -x "$b" ] || die "$b is missing: meson setup $BUILD -Dbuildtype=release && ninja -C $BUILD"
done
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is not installed"
case "$SECS$ROUNDS" in *[!0-9]*) die "HTTP_BENCH_SECONDS and HTTP_BENCH_ROUNDS are integers" ;; esac
[ "$SECS" -ge 1 ] && [ "$SECS" -le 120 ] || die "HTTP_BENCH_SECONDS must be in [1, 120]"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || die "HTTP_BENCH_ROUNDS must be in [1, 10]"
# Every server stops by itself after this many seconds even if the trap never runs.
LIFE=$((SECS * (2 * ROUNDS + 2) + 300))

TMP=$(mktemp -d /tmp/brewslm-httpbench.XXXXXX)
DPID=""        # timeout(1) wrappers
BPID=""
DAEMON_PID="" # the servers themselves
BARE_PID=""
cleanup() {
    for p in $DAEMON_PID $BARE_PID $DPID $BPID; do
        kill "$p" 2>/dev/null || true
    done
    for p in $DAEMON_PID $BARE_PID $DPID $BPID; do
        # Give the daemon its shutdown (a few seconds), then insist.
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -------------------------------------------------------------------

# wait_port FILE PREFIX: the port from "PREFIX<port>" once FILE has that line (10 s).
wait_port() {
    i=0
    while [ $i -lt 100 ]; do
        p=$(sed -n "s|^$2\([0-9][0-9]*\)\$|\1|p" "$1" 2>/dev/null | head -n 1)
        if [ -n "$p" ]; then
            echo "$p"
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

api() { # api METHOD PATH [JSON-BODY]: the body of the answer (curl fails on >= 400)
    if [ $# -ge 3 ]; then
        curl -sS --fail --max-time 30 -X "$1" -H 'Content-Type: application/json' \
            --data-binary "$3" "http://127.0.0.1:$PORT$2"
    else
        curl -sS --fail --max-time 30 -X "$1" "http://127.0.0.1:$PORT$2"
    fi
}

json_str() { # json_str KEY: the first "KEY":"value" of stdin
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}

job_step() { # the progress.step of job $1 (-1 when it cannot be read)
    n=$(api GET "/v1/jobs/$1" | sed -n 's/.*"progress":{"step":\([0-9]*\).*/\1/p') || true
    echo "${n:--1}"
}

wait_status() { # wait_status ID STATUS SECONDS
    i=0
    while [ $i -lt $(($3 * 10)) ]; do
        s=$(api GET "/v1/jobs/$1" | json_str status)
        [ "$s" = "$2" ] && return 0
        case "$s" in succeeded | failed | cancelled | blocked)
            [ "$s" = "$2" ] || die "job $1 ended $s (waiting for $2): $(api GET "/v1/jobs/$1")"
            ;;
        esac
        sleep 0.1
        i=$((i + 1))
    done
    die "job $1 not $2 within $3 s"
}

cpu_ticks() { # utime + stime of process $1, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

machine_ticks() { # "busy total" clock ticks of all CPUs since boot (/proc/stat)
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

busy_share() { # busy_share "B0 T0" "B1 T1": the busy fraction between two machine_ticks
    echo "$1 $2" | awk '{ printf "%.2f", ($3 - $1) / ($4 - $2) }'
}

# run_wrk NAME URL: one wrk run; stores its JSON line in $TMP/NAME.json.
run_wrk() {
    out=$(timeout $((SECS + 30)) wrk -t$THREADS -c$CONNS -d"${SECS}s" --latency -s "$LUA" "$2") ||
        die "wrk failed on $2"
    line=$(printf '%s\n' "$out" | sed -n 's/^HTTPBENCH //p')
    [ -n "$line" ] || die "no report from wrk on $2: $out"
    printf '%s\n' "$line" >"$TMP/$1.json"
}

field() { # field NAME KEY: a number from $TMP/NAME.json
    sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$TMP/$1.json"
}

errors() { # errors NAME: socket errors + non-2xx/3xx answers
    sed -n 's/.*"errors":{"connect":\([0-9]*\),"read":\([0-9]*\),"write":\([0-9]*\),"timeout":\([0-9]*\),"status":\([0-9]*\)}.*/\1 \2 \3 \4 \5/p' \
        "$TMP/$1.json" | awk '{ print $1 + $2 + $3 + $4 + $5 }'
}

median() { # median of the arguments
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- 1. the daemon and a finished job ----------------------------------------------

mkdir -p "$TMP/data" "$TMP/var"
# Byte-tokenized preference rows. Short ones for the finished job; long ones (about
# 200 tokens a pair) so the long job's steps are mostly matrix work on both cores.
awk 'BEGIN {
    split("cat dog sun sky tea sea owl fox", w, " ")
    for (i = 0; i < 64; i++) {
        a = w[i % 8 + 1]; b = w[(i + 3) % 8 + 1]
        printf "{\"prompt\":\"say %s:\",\"chosen\":\" %s.\",\"rejected\":\" %s!\"}\n", a, a, b
    }
}' >"$TMP/data/short.jsonl"
awk 'BEGIN {
    split("cat dog sun sky tea sea owl fox", w, " ")
    for (i = 0; i < 64; i++) {
        p = "Tell me about the"; c = ""; r = ""
        for (k = 0; k < 12; k++) p = p " " w[(i * 7 + k * 3) % 8 + 1]
        for (k = 0; k < 16; k++) { c = c " " w[(i + k) % 8 + 1]; r = r " " w[(i * 5 + k * 3) % 8 + 1] }
        printf "{\"prompt\":\"%s:\",\"chosen\":\"%s.\",\"rejected\":\"%s!\"}\n", p, c, r
    }
}' >"$TMP/data/long.jsonl"

timeout $LIFE "$DAEMON" --listen 127.0.0.1:0 --state-dir "$TMP/var" --db "$TMP/var/brewslm.db" \
    --data-root "$TMP/data" >"$TMP/daemon.out" 2>"$TMP/daemon.log" &
DPID=$!
PORT=$(wait_port "$TMP/daemon.out" "brewslmd listening on http://127.0.0.1:") ||
    die "brewslmd did not start: $(cat "$TMP/daemon.log")"
DAEMON_PID=$(pgrep -P "$DPID" | head -n 1)
[ -n "$DAEMON_PID" ] || die "cannot find brewslmd's pid"

SMALL='{"method":"dpo","beta":0.1,"data":"preference","model_init":{"dim":16,"n_layers":1,"n_heads":2,"n_kv_heads":2,"hidden_dim":32,"max_seq_len":32},"train_file":"short.jsonl","max_steps":2,"logging_steps":1,"per_device_train_batch_size":4,"learning_rate":0.001,"max_length":32,"max_prompt_length":16,"save_steps":0}'
JOB=$(api POST /v1/jobs "$SMALL" | json_str id)
[ -n "$JOB" ] || die "job submission failed"
wait_status "$JOB" succeeded 120
api GET "/v1/jobs/$JOB" >"$TMP/job.json"
BODY_BYTES=$(wc -c <"$TMP/job.json" | tr -d ' ')

# --- 2. the bare server ----------------------------------------------------------------

timeout $LIFE "$BARE" --body "$TMP/job.json" --max-seconds $LIFE >"$TMP/bare.out" \
    2>"$TMP/bare.log" &
BPID=$!
BPORT=$(wait_port "$TMP/bare.out" "http_bare listening on http://127.0.0.1:") ||
    die "http_bare did not start: $(cat "$TMP/bare.log")"
BARE_PID=$(pgrep -P "$BPID" | head -n 1)
[ -n "$BARE_PID" ] || die "cannot find http_bare's pid"
OURS_URL="http://127.0.0.1:$PORT/v1/jobs/$JOB"
BARE_URL="http://127.0.0.1:$BPORT/v1/jobs/$JOB"
curl -sS --fail --max-time 10 "$BARE_URL" | cmp -s - "$TMP/job.json" ||
    die "http_bare does not answer the job's bytes"

echo "brewslmd $PORT, http_bare $BPORT, job $JOB ($BODY_BYTES-byte body);" \
    "wrk -t$THREADS -c$CONNS -d${SECS}s x $ROUNDS round(s) each" >&2

# --- 3. idle: alternating rounds -----------------------------------------------------------

# A short warm-up each, so neither side pays first-connection and cache costs.
SAVE=$SECS
SECS=1
run_wrk warm_bare "$BARE_URL"
run_wrk warm_ours "$OURS_URL"
SECS=$SAVE
r=1
OURS_RPS=""
BARE_RPS=""
while [ $r -le "$ROUNDS" ]; do
    # Alternate which side goes first, so a drift in machine load hits both.
    if [ $((r % 2)) -eq 1 ]; then order="bare ours"; else order="ours bare"; fi
    for side in $order; do
        if [ $side = bare ]; then url=$BARE_URL; pid=$BARE_PID; else url=$OURS_URL; pid=$DAEMON_PID; fi
        t0=$(cpu_ticks "$pid")
        run_wrk "idle_${side}_$r" "$url"
        t1=$(cpu_ticks "$pid")
        echo $((t1 - t0)) >"$TMP/idle_${side}_$r.ticks"
        rps=$(field "idle_${side}_$r" rps)
        echo "  round $r $side: $rps req/s, p99 $(field "idle_${side}_$r" p99) us" >&2
        if [ $side = bare ]; then BARE_RPS="$BARE_RPS $rps"; else OURS_RPS="$OURS_RPS $rps"; fi
    done
    r=$((r + 1))
done

# --- 4. under training load ---------------------------------------------------------------

LONG='{"method":"dpo","beta":0.1,"data":"preference","model_init":{"dim":256,"n_layers":4,"n_heads":8,"n_kv_heads":8,"hidden_dim":688,"max_seq_len":256},"train_file":"long.jsonl","max_steps":1000000,"logging_steps":10,"per_device_train_batch_size":8,"learning_rate":0.0001,"max_length":256,"max_prompt_length":128,"save_steps":0}'
LJOB=$(api POST /v1/jobs "$LONG" | json_str id)
[ -n "$LJOB" ] || die "long job submission failed"
wait_status "$LJOB" running 60
# Past start-up (data, reference model): wait for the first logged steps.
i=0
while [ "$(job_step "$LJOB")" -lt 10 ] && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
LOAD_URL="http://127.0.0.1:$PORT/v1/jobs/$LJOB"
TICK=$(getconf CLK_TCK)
# The trainer alone, SECS/2 seconds: steps/s and cores used.
s0=$(job_step "$LJOB")
c0=$(cpu_ticks "$DAEMON_PID")
m0=$(machine_ticks)
n0=$(date +%s.%N)
sleep $(((SECS + 1) / 2))
s1=$(job_step "$LJOB")
c1=$(cpu_ticks "$DAEMON_PID")
m1=$(machine_ticks)
n1=$(date +%s.%N)
ALONE_BUSY=$(busy_share "$m0" "$m1")
ALONE_SPS=$(echo "$s0 $s1 $n0 $n1" | awk '{ printf "%.2f", ($2 - $1) / ($4 - $3) }')
ALONE_CORES=$(echo "$c0 $c1 $n0 $n1 $TICK" | awk '{ printf "%.2f", ($2 - $1) / $5 / ($4 - $3) }')
# Polled: ours, then the bare server under the same load.
s0=$(job_step "$LJOB")
c0=$(cpu_ticks "$DAEMON_PID")
m0=$(machine_ticks)
n0=$(date +%s.%N)
run_wrk load_ours "$LOAD_URL"
s1=$(job_step "$LJOB")
c1=$(cpu_ticks "$DAEMON_PID")
m1=$(machine_ticks)
n1=$(date +%s.%N)
POLLED_BUSY=$(busy_share "$m0" "$m1")
POLLED_SPS=$(echo "$s0 $s1 $n0 $n1" | awk '{ printf "%.2f", ($2 - $1) / ($4 - $3) }')
POLLED_CORES=$(echo "$c0 $c1 $n0 $n1 $TICK" | awk '{ printf "%.2f", ($2 - $1) / $5 / ($4 - $3) }')
run_wrk load_bare "$BARE_URL"
LOAD_STATUS=$(api GET "/v1/jobs/$LJOB" | json_str status)
[ "$LOAD_STATUS" = running ] || die "the long job was $LOAD_STATUS after the load runs"
api POST "/v1/jobs/$LJOB/cancel" >/dev/null || die "cancel failed"
wait_status "$LJOB" cancelled 60

# --- report -----------------------------------------------------------------------------------

OURS_MED=$(median $OURS_RPS)
BARE_MED=$(median $BARE_RPS)
RATIO=$(echo "$OURS_MED $BARE_MED" | awk '{ printf "%.3f", $1 / $2 }')
us_per_req() { # us_per_req SIDE: median server CPU microseconds per request over the rounds
    r=1
    vals=""
    while [ $r -le "$ROUNDS" ]; do
        vals="$vals $(echo "$(cat "$TMP/idle_$1_$r.ticks") $(field "idle_$1_$r" requests) $TICK" |
            awk '{ printf "%.2f", $1 / $3 * 1e6 / $2 }')"
        r=$((r + 1))
    done
    median $vals
}
OURS_CPU=$(us_per_req ours)
BARE_CPU=$(us_per_req bare)
med_field() { # med_field SIDE KEY: the median of KEY over the idle rounds
    r=1
    vals=""
    while [ $r -le "$ROUNDS" ]; do
        vals="$vals $(field "idle_$1_$r" "$2")"
        r=$((r + 1))
    done
    median $vals
}
ERRS=0
for f in "$TMP"/idle_*.json "$TMP"/load_*.json; do
    n=$(basename "$f" .json)
    ERRS=$((ERRS + $(errors "$n")))
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RES="$ROOT/tests/bench/results"
mkdir -p "$RES"
{
    printf '{"benchmark":"http_get_job","stamp":"%s","host":"%s","cpus":%s,' \
        "$STAMP" "$(uname -n)" "$(getconf _NPROCESSORS_ONLN)"
    printf '"wrk":{"threads":%d,"connections":%d,"seconds":%d,"rounds":%d},"body_bytes":%s,' \
        $THREADS $CONNS "$SECS" "$ROUNDS" "$BODY_BYTES"
    printf '"idle":{"ours_rps_median":%s,"bare_rps_median":%s,"ratio":%s,"min_ratio":%s,' \
        "$OURS_MED" "$BARE_MED" "$RATIO" "$MIN_RATIO"
    printf '"ours_cpu_us_per_request":%s,"bare_cpu_us_per_request":%s,' "$OURS_CPU" "$BARE_CPU"
    printf '"ours_p99_us_median":%s,"bare_p99_us_median":%s,"rounds":[' \
        "$(med_field ours p99)" "$(med_field bare p99)"
    r=1
    while [ $r -le "$ROUNDS" ]; do
        [ $r -gt 1 ] && printf ','
        printf '{"ours":%s,"bare":%s}' "$(cat "$TMP/idle_ours_$r.json")" "$(cat "$TMP/idle_bare_$r.json")"
        r=$((r + 1))
    done
    printf ']},"training":{"job":{"dim":256,"n_layers":4,"max_length":256,"batch":8},'
    printf '"steps_per_s_alone":%s,"steps_per_s_polled":%s,' "$ALONE_SPS" "$POLLED_SPS"
    printf '"daemon_cores_alone":%s,"daemon_cores_polled":%s,' "$ALONE_CORES" "$POLLED_CORES"
    printf '"machine_busy_alone":%s,"machine_busy_polled":%s,' "$ALONE_BUSY" "$POLLED_BUSY"
    printf '"ours":%s,"bare":%s},' "$(cat "$TMP/load_ours.json")" "$(cat "$TMP/load_bare.json")"
    printf '"errors":%d}\n' "$ERRS"
} >"$RES/http-$STAMP.json"

us_to_ms() { echo "$1" | awk '{ printf "%.2f", $1 / 1000 }'; }
{
    echo "GET /v1/jobs/{id}, wrk -t$THREADS -c$CONNS -d${SECS}s, $BODY_BYTES-byte job object," \
        "loopback, $(getconf _NPROCESSORS_ONLN) CPUs ($STAMP)"
    echo
    echo "| | req/s (median of $ROUNDS) | p50 ms | p99 ms | server CPU us/req |"
    echo "|---|---|---|---|---|"
    echo "| bare libmicrohttpd | $BARE_MED | $(us_to_ms "$(med_field bare p50)") |" \
        "$(us_to_ms "$(med_field bare p99)") | $BARE_CPU |"
    echo "| brewslmd | $OURS_MED | $(us_to_ms "$(med_field ours p50)") |" \
        "$(us_to_ms "$(med_field ours p99)") | $OURS_CPU |"
    echo "| ratio | $RATIO (>= $MIN_RATIO) | | | |"
    echo
    echo "While a DPO job trains (alone: daemon $ALONE_CORES cores, machine ${ALONE_BUSY} busy," \
        "$ALONE_SPS steps/s; polled: daemon $POLLED_CORES cores, machine ${POLLED_BUSY} busy," \
        "$POLLED_SPS steps/s):"
    echo
    echo "| | req/s | p50 ms | p99 ms | max ms |"
    echo "|---|---|---|---|---|"
    for side in ours bare; do
        name=brewslmd
        [ $side = bare ] && name="bare libmicrohttpd"
        echo "| $name | $(field load_$side rps) | $(us_to_ms "$(field load_$side p50)") |" \
            "$(us_to_ms "$(field load_$side p99)") | $(us_to_ms "$(field load_$side max)") |"
    done
    echo
    echo "socket errors + non-2xx answers: $ERRS"
} | tee "$RES/http-$STAMP.md"
echo "wrote $RES/http-$STAMP.json and .md" >&2

[ "$ERRS" -eq 0 ] || die "$ERRS request(s) failed"
echo "$RATIO $MIN_RATIO" | awk '{ exit !($1 >= $2) }' ||
    die "brewslmd reached only ${RATIO}x of bare libmicrohttpd (needs >= ${MIN_RATIO}x)"
