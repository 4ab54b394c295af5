#!/usr/bin/env bash
# Load benchmark: zerodown vs the hyper floor vs nginx vs HAProxy (and a direct connection to one
# upstream), side by side on one machine. Not part of CI. `floor` is examples/floor.rs, a bare
# hyper + tokio proxy from the same locked versions (no forwarding headers, no timers): the least
# zerodown's stack can cost.
#
# Usage: benches/load.sh [options]
#   --rounds N          rounds; each round runs every target once, interleaved (A B C D A B C D ...) [3]
#   --duration S        seconds per run [10]
#   --connections LIST  client connections, comma-separated, e.g. 64 or 1,10,100,1000 [64]
#   --targets LIST      any of zerodown,floor,nginx,haproxy,direct,zerodown_swap,zerodown_b,
#                       zerodown_shipped [zerodown,floor,nginx,haproxy,direct]. zerodown_shipped is
#                       zerodown as shipped: the embedded defaults (a worker per core, the access log
#                       on, JSON lines to stdout, here its log file) with only the addresses and the
#                       upstreams file set; `zerodown` is the lean setting (conf/zerodown.toml:
#                       access log off, --threads as given)
#   --swap MS           add the target zerodown_swap: the same zerodown while its upstreams file is
#                       rewritten every MS ms (versions v1 <-> v2 on the same addresses), with
#                       source.poll_interval = MS/2; the swaps that really happened are counted from
#                       /status [off]
#   --rate R            constant offered load of R req/s (needs `oha`, run with -q R and latency
#                       correction) instead of wrk's closed loop; compares p99 at equal load [off]
#   --upstreams N       upstream instances [2]. N <= 8: one nginx process per instance;
#                       N > 8: one nginx process listening on N ports (same single worker)
#   --backend KIND      nginx | zerodown (`zerodown demo-backend`, N <= 8) [nginx]
#   --threads N         zerodown and floor --threads, nginx worker_processes, HAProxy nbthread [1]
#   --proxy-cpus LIST   taskset CPU list for the proxies [0]
#   --load-cpus LIST    taskset CPU list for the load generator and the upstreams [1]
#   --wrk-threads N     wrk -t [1]
#   --zerodown-b BIN    add the target zerodown_b: a second zerodown binary (an A/B build), same config
#   --zerodown BIN      zerodown binary [$CARGO_TARGET_DIR or ./target, release/zerodown; built if missing]
#   --floor BIN         floor binary [same directory, release/examples/floor; built if missing]
#   --out FILE          also copy the per-run TSV here
#   --max-conns N       nginx worker_connections / 2 x HAProxy maxconn [2 x largest --connections + 1024]
#   --idle-conns N      after the rounds, per target: open N keep-alive client connections, one
#                       request each, hold them, and record the serving process's RSS (idle.tsv)
#   --idle-only         skip the load rounds (with --idle-conns: only the idle-connection test)
#   --profile FILE      instead of the rounds: load the first target (--targets zerodown) for
#                       --duration seconds under `perf record -g` and write the flat profile
#                       (perf report --no-children) to FILE (needs linux-perf)
#   --syscalls FILE     instead of the rounds: per target, count the proxy's system calls per
#                       request under `strace -c -f` (slows the proxy; the counts are what matter)
#   --quick             1 round of 3 s (a smoke test)
#   --no-install        do not apt-get install missing tools
#   --keep              keep the run directory (configs, logs) in /tmp
#
# Pinning: with 2 cores the proxies get CPU 0 to themselves; the load generator and the upstreams
# share CPU 1. Every proxy is started once and stays up (idle when it is not the one under load).
# Per run it records req/s, p50/p90/p99 latency, the serving processes' CPU seconds (utime+stime
# from /proc/PID/stat; nginx: master+workers) per 100k requests, the proxy's CPU utilisation over
# the run, and peak RSS (VmHWM; nginx: the worker, not the master). For `direct`, CPU and RSS
# are the upstream instance's own.
# Output: a TSV per run (machine-readable, path printed) and a summary table with medians,
# min-max and ratios against nginx (and zerodown's against the floor) taken round by round (same
# round, same connections).
# Every run is bounded (wrk -d / oha -z); every process started here is stopped by PID on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CONF="$HERE/conf"
# shellcheck source=benches/lib.sh
. "$HERE/lib.sh"

ROUNDS=3 DURATION=10 CONNECTIONS=64 TARGETS="zerodown,floor,nginx,haproxy,direct" SWAP_MS="" RATE=""
UPSTREAMS=2 BACKEND=nginx THREADS=1 PROXY_CPUS=0 LOAD_CPUS=1 WRK_THREADS=1 ZD_BIN="" ZD_B_BIN="" FLOOR_BIN="" OUT=""
INSTALL=1 KEEP=0 WARMUP=2 MAX_CONNS="" IDLE_CONNS="" PROFILE="" SYSCALLS=""
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --swap) SWAP_MS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --upstreams) UPSTREAMS=$2; shift ;;
    --backend) BACKEND=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --proxy-cpus) PROXY_CPUS=$2; shift ;;
    --load-cpus) LOAD_CPUS=$2; shift ;;
    --wrk-threads) WRK_THREADS=$2; shift ;;
    --zerodown) ZD_BIN=$2; shift ;;
    --zerodown-b) ZD_B_BIN=$2; shift ;;
    --floor) FLOOR_BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --max-conns) MAX_CONNS=$2; shift ;;
    --idle-conns) IDLE_CONNS=$2; shift ;;
    --idle-only) ROUNDS=0 ;;
    --profile) PROFILE=$2; ROUNDS=0; shift ;;
    --syscalls) SYSCALLS=$2; ROUNDS=0; shift ;;
    --quick) ROUNDS=1 DURATION=3 WARMUP=1 ;;
    --no-install) INSTALL=0 ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "load.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done
if [ -n "$ZD_B_BIN" ] && [[ ",$TARGETS," != *",zerodown_b,"* ]]; then
    TARGETS="$TARGETS,zerodown_b"
fi
if [ -n "$SWAP_MS" ] && [[ ",$TARGETS," != *",zerodown_swap,"* ]]; then
    TARGETS="$TARGETS,zerodown_swap"
fi
IFS=, read -r -a TARGET_LIST <<<"$TARGETS"
IFS=, read -r -a CONN_LIST <<<"$CONNECTIONS"
for t in "${TARGET_LIST[@]}"; do
    case "$t" in zerodown | zerodown_shipped | floor | nginx | haproxy | direct) ;; zerodown_b) [ -x "$ZD_B_BIN" ] || { echo "load.sh: zerodown_b needs --zerodown-b BIN" >&2; exit 64; } ;; zerodown_swap) [ -n "$SWAP_MS" ] || SWAP_MS=10 ;;
    *) echo "load.sh: unknown target $t" >&2; exit 64 ;; esac
done

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || { echo "load.sh: missing ${need[*]} (and --no-install)" >&2; exit 69; }
    log "installing ${need[*]} from Debian"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The packaged services are not wanted; this script runs its own instances.
if [ -n "$RATE" ] && ! command -v oha >/dev/null; then
    echo "load.sh: --rate needs oha (cargo install oha)" >&2; exit 69
fi
if [ -z "$ZD_BIN" ]; then
    ZD_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/zerodown"
fi
if [ ! -x "$ZD_BIN" ]; then
    log "building $ZD_BIN (release, fat LTO: a few minutes)"
    (cd "$ROOT" && cargo build --release --quiet)
fi
FLOOR_BIN=${FLOOR_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/floor}
if [[ ",$TARGETS," == *",floor,"* ]] && [ ! -x "$FLOOR_BIN" ]; then
    log "building $FLOOR_BIN (release)"
    (cd "$ROOT" && cargo build --release --quiet --example floor)
fi
[ "$BACKEND" = nginx ] || [ "$UPSTREAMS" -le 8 ] || { echo "load.sh: --backend zerodown takes at most 8 upstreams" >&2; exit 64; }

# Enough descriptors for 1,000+ connections per side (and 10k idle in scale.sh).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# Connection limits sized to the run (nginx preallocates ~0.4 kB per worker_connections slot, so a
# huge fixed value would inflate its RSS): twice the largest client count plus headroom.
maxc=0; for c in "${CONN_LIST[@]}"; do [ "$c" -gt "$maxc" ] && maxc=$c; done
WCONN=$(( 2 * maxc + 1024 ))
[ -n "$MAX_CONNS" ] && WCONN=$MAX_CONNS
[ "$WCONN" -gt "$NOFILE" ] && WCONN=$NOFILE
MAXCONN=$(( WCONN / 2 ))
[ "$MAXCONN" -gt $(( (NOFILE - 200) / 2 )) ] && MAXCONN=$(( (NOFILE - 200) / 2 ))

# --- processes ---------------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/zerodown-bench.XXXXXX)
PIDS=()
SWAPPER=""
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }
cleanup() {
    set +e
    [ -n "$SWAPPER" ] && kill "$SWAPPER" 2>/dev/null
    local all=() p c
    for p in "${PIDS[@]}"; do
        for c in $(children "$p"); do all+=("$c"); done
        all+=("$p")
    done
    for p in "${all[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$KEEP" = 1 ]; then log "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPUS CMD...: runs CMD pinned, logs to $RUN/NAME.log, sets $STARTED to its PID.
start() {
    local name=$1 cpus=$2; shift 2
    taskset -c "$cpus" "$@" >"$RUN/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}
# wait_ok URL: until it answers 200 (10 s at most).
wait_ok() {
    local i
    for i in $(seq 1 100); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")" = 200 ]; then return 0; fi
        sleep 0.1
    done
    echo "load.sh: $1 did not answer 200 within 10 s; logs in $RUN" >&2
    KEEP=1
    exit 1
}

UP_BASE=19001 ZD_PORT=18081 ZD_ADMIN=18091 ZB_PORT=18084 ZB_ADMIN=18094 ZS_PORT=18086 ZS_ADMIN=18096 NP_PORT=18082 HA_PORT=18083 FL_PORT=18085
UP_ADDRS=()
for i in $(seq 0 $((UPSTREAMS - 1))); do UP_ADDRS+=("127.0.0.1:$((UP_BASE + i))"); done

# Upstreams.
UP_PIDS=()
if [ "$BACKEND" = nginx ]; then
    if [ "$UPSTREAMS" -le 8 ]; then
        for i in $(seq 0 $((UPSTREAMS - 1))); do
            render "$CONF/nginx-upstream.conf" "$RUN/up$i.conf" RUN="$RUN" NAME="up$i" VERSION=v1 NOFILE="$NOFILE" WCONN="$WCONN" \
                LISTENS="        listen ${UP_ADDRS[$i]} backlog=4096;"
            start "up$i" "$LOAD_CPUS" nginx -p "$RUN" -c "$RUN/up$i.conf"
            UP_PIDS+=("$STARTED")
        done
    else
        listens=$(for a in "${UP_ADDRS[@]}"; do echo "        listen $a backlog=4096;"; done)
        render "$CONF/nginx-upstream.conf" "$RUN/up.conf" RUN="$RUN" NAME=up VERSION=v1 NOFILE="$NOFILE" WCONN="$WCONN" LISTENS="$listens"
        start up "$LOAD_CPUS" nginx -p "$RUN" -c "$RUN/up.conf"
        UP_PIDS+=("$STARTED")
    fi
else
    for i in $(seq 0 $((UPSTREAMS - 1))); do
        start "up$i" "$LOAD_CPUS" "$ZD_BIN" demo-backend --listen "${UP_ADDRS[$i]}" --version v1 \
            --message "Lionel Messi is the best player in the world!"
        UP_PIDS+=("$STARTED")
    done
fi
for a in "${UP_ADDRS[@]}"; do wait_ok "http://$a/hello"; done

# Proxies.
upstreams_file() { # upstreams_file VERSION > file
    local i=0 a
    for a in "${UP_ADDRS[@]}"; do
        printf '[[instances]]\nid = "up%d"\naddress = "%s"\nversion = "%s"\ntags = ["active"]\n\n' "$i" "$a" "$1"
        i=$((i + 1))
    done
}
POLL=1s
[ -n "$SWAP_MS" ] && POLL="$(python3 -c "print(max(1, int($SWAP_MS) // 2))")ms"
declare -A PORT SERVE_PIDS MASTER
need_target() { [[ ",$TARGETS," == *",$1,"* ]]; }
if need_target zerodown || need_target zerodown_swap; then
    upstreams_file v1 >"$RUN/upstreams.toml"
    upstreams_file v1 >"$RUN/upstreams.v1"
    upstreams_file v2 >"$RUN/upstreams.v2"
    render "$CONF/zerodown.toml" "$RUN/zerodown.toml" PORT=$ZD_PORT ADMIN=$ZD_ADMIN THREADS="$THREADS" POLL="$POLL"
    start zerodown "$PROXY_CPUS" "$ZD_BIN" serve --config "$RUN/zerodown.toml" --threads "$THREADS"
    MASTER[zerodown]=$STARTED
    wait_ok "http://127.0.0.1:$ZD_PORT/hello"
fi
if need_target zerodown_b; then
    mkdir -p "$RUN/b"
    upstreams_file v1 >"$RUN/b/upstreams.toml"
    render "$CONF/zerodown.toml" "$RUN/b/zerodown.toml" PORT=$ZB_PORT ADMIN=$ZB_ADMIN THREADS="$THREADS" POLL="$POLL"
    start zerodown_b "$PROXY_CPUS" "$ZD_B_BIN" serve --config "$RUN/b/zerodown.toml" --threads "$THREADS"
    MASTER[zerodown_b]=$STARTED
    wait_ok "http://127.0.0.1:$ZB_PORT/hello"
fi
if need_target zerodown_shipped; then
    mkdir -p "$RUN/shipped"
    upstreams_file v1 >"$RUN/shipped/upstreams.toml"
    printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n\n[source]\nkind = "file"\npath = "upstreams.toml"\n' \
        "$ZS_PORT" "$ZS_ADMIN" >"$RUN/shipped/zerodown.toml"
    start zerodown_shipped "$PROXY_CPUS" "$ZD_BIN" serve --config "$RUN/shipped/zerodown.toml"
    MASTER[zerodown_shipped]=$STARTED
    wait_ok "http://127.0.0.1:$ZS_PORT/hello"
fi
if need_target floor; then
    fargs=(); for a in "${UP_ADDRS[@]}"; do fargs+=(--upstream "$a"); done
    start floor "$PROXY_CPUS" "$FLOOR_BIN" --listen "127.0.0.1:$FL_PORT" "${fargs[@]}" --threads "$THREADS"
    MASTER[floor]=$STARTED
    wait_ok "http://127.0.0.1:$FL_PORT/hello"
fi
if need_target nginx; then
    servers=$(for a in "${UP_ADDRS[@]}"; do echo "        server $a max_fails=3 fail_timeout=10s;"; done)
    render "$CONF/nginx-proxy.conf" "$RUN/nginx-proxy.conf" RUN="$RUN" PORT=$NP_PORT WORKERS="$THREADS" NOFILE="$NOFILE" WCONN="$WCONN" SERVERS="$servers"
    start nginx-proxy "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/nginx-proxy.conf"
    MASTER[nginx]=$STARTED
    wait_ok "http://127.0.0.1:$NP_PORT/hello"
fi
if need_target haproxy; then
    servers=$(i=0; for a in "${UP_ADDRS[@]}"; do echo "    server s$i $a"; i=$((i + 1)); done)
    render "$CONF/haproxy.cfg" "$RUN/haproxy.cfg" PORT=$HA_PORT THREADS="$THREADS" MAXCONN="$MAXCONN" SERVERS="$servers"
    start haproxy "$PROXY_CPUS" haproxy -db -f "$RUN/haproxy.cfg"
    MASTER[haproxy]=$STARTED
    wait_ok "http://127.0.0.1:$HA_PORT/hello"
fi
MASTER[direct]=${UP_PIDS[0]}
MASTER[zerodown_swap]=${MASTER[zerodown]:-}
PORT=([zerodown]=$ZD_PORT [zerodown_b]=$ZB_PORT [zerodown_shipped]=$ZS_PORT [zerodown_swap]=$ZD_PORT [floor]=$FL_PORT [nginx]=$NP_PORT [haproxy]=$HA_PORT [direct]=$UP_BASE)

# cpu_pids T: the master and its children (all of them do the work or own it).
cpu_pids() { local m=${MASTER[$1]}; echo "$m" $(children "$m"); }
# rss_pids T: the process(es) serving: nginx workers, else the process itself.
rss_pids() {
    local m=${MASTER[$1]} c
    c=$(children "$m")
    if [ -n "$c" ] && { [ "$1" = nginx ] || { [ "$1" = direct ] && [ "$BACKEND" = nginx ]; }; }; then echo $c; else echo "$m"; fi
}
ticks() { # sum of utime+stime over PIDs, in clock ticks
    local t=0 p f
    for p in "$@"; do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}
kb() { # kb FIELD PIDS...: max of a /proc/PID/status field over PIDs
    local field=$1 m=0 v p; shift
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        [ "${v:-0}" -gt "$m" ] && m=$v
    done
    echo "$m"
}
HZ=$(getconf CLK_TCK)
generation() { curl -s --max-time 1 "http://127.0.0.1:$ZD_ADMIN/status" | python3 -c 'import sys,json; print(json.load(sys.stdin).get("generation", 0))' 2>/dev/null || echo 0; }

# --- runs --------------------------------------------------------------------------------------
TSV="$RUN/results.tsv"
printf 'round\ttarget\tconnections\trate\tduration_s\trequests\terrors\tnon2xx\trps\tp50_us\tp90_us\tp99_us\tmax_us\tcpu_s\tcpu_s_per_100k\tutil\tpeak_rss_kb\tidle_rss_kb\tswaps\n' >"$TSV"
declare -A IDLE_RSS
for t in "${TARGET_LIST[@]}"; do IDLE_RSS[$t]=$(kb VmRSS $(rss_pids "$t")); done

# load T CONNS SECONDS: prints "requests duration_us errors non2xx p50 p90 p99 max" (µs).
load() {
    local url="http://127.0.0.1:${PORT[$1]}/hello" c=$2 d=$3
    if [ -n "$RATE" ]; then
        taskset -c "$LOAD_CPUS" oha -z "${d}s" -c "$c" -q "$RATE" --latency-correction --no-tui \
            --output-format json "$url" 2>/dev/null | python3 -c '
import sys, json
j = json.load(sys.stdin); s = j["summary"]; p = j["latencyPercentiles"]
codes = j.get("statusCodeDistribution", {})
# Requests still in flight when -z ends are reported as "aborted due to deadline": not failures.
errs = sum(v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
ok = sum(v for k, v in codes.items() if k.startswith("2")); bad = sum(codes.values()) - ok
us = lambda x: round((x or 0) * 1e6)
print(ok + bad, round(s["total"] * 1e6), errs, bad, us(p["p50"]), us(p["p90"]), us(p["p99"]), us(s["slowest"]))'
    else
        local w=$WRK_THREADS
        [ "$c" -lt "$w" ] && w=$c
        taskset -c "$LOAD_CPUS" wrk -t "$w" -c "$c" -d "${d}s" --timeout 5s -s "$CONF/wrk-report.lua" "$url" |
            awk -F'\t' '$1 == "WRK" { print $2, $3, $4, $5, $6, $7, $8, $9 }'
    fi
}

run_one() { # run_one ROUND TARGET CONNS
    local r=$1 t=$2 c=$3 pids g0=0 g1=0 t0 t1 out
    pids=$(cpu_pids "$t")
    if [ "$t" = zerodown_swap ]; then
        g0=$(generation)
        python3 - "$RUN/upstreams.toml" "$RUN/upstreams.v1" "$RUN/upstreams.v2" "$SWAP_MS" <<'PY' &
import os, sys, time
path, a, b, ms = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read(), int(sys.argv[4])
tmp, k = path + ".tmp", 0
while True:
    k += 1
    with open(tmp, "w") as f:
        f.write(b if k % 2 else a)
    os.replace(tmp, path)
    time.sleep(ms / 1000)
PY
        SWAPPER=$!
        taskset -pc "$LOAD_CPUS" "$SWAPPER" >/dev/null
    fi
    t0=$(ticks $pids)
    out=$(load "$t" "$c" "$DURATION")
    t1=$(ticks $pids)
    if [ -n "$SWAPPER" ]; then
        kill "$SWAPPER" 2>/dev/null; wait "$SWAPPER" 2>/dev/null || true; SWAPPER=""
        sleep 0.05; g1=$(generation)
    fi
    [ -n "$out" ] || { log "run $t c=$c produced no result"; return 0; }
    # shellcheck disable=SC2086
    set -- $out
    python3 - "$r" "$t" "$c" "${RATE:--}" "$@" "$((t1 - t0))" "$HZ" "$(kb VmHWM $(rss_pids "$t"))" \
        "${IDLE_RSS[$t]}" "$((g1 - g0))" >>"$TSV" <<'PY'
import sys
r, t, c, rate, req, dur_us, err, non2xx, p50, p90, p99, mx, ticks, hz, rss, idle, swaps = sys.argv[1:]
req, dur = int(req), int(dur_us) / 1e6
cpu = int(ticks) / int(hz)
print("\t".join(map(str, [r, t, c, rate, f"{dur:.2f}", req, err, non2xx, f"{req / dur:.0f}",
      p50, p90, p99, mx, f"{cpu:.2f}", f"{cpu / req * 1e5:.3f}" if req else "nan",
      f"{cpu / dur:.2f}", rss, idle, swaps])))
PY
    tail -n1 "$TSV" | awk -F'\t' '{ printf "  round %s %-14s c=%-5s %8s req/s  p50 %6s us  p99 %7s us  cpu/100k %6s s  util %s  rss %s kB  err %s/%s%s\n", $1, $2, $3, $9, $10, $12, $15, $16, $17, $7, $8, ($2 == "zerodown_swap" ? "  swaps " $19 : "") }' >&2
}

log "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1); proxies on CPU $PROXY_CPUS, load+upstreams on CPU $LOAD_CPUS"
log "targets ${TARGETS}; connections ${CONNECTIONS}; ${ROUNDS} rounds x ${DURATION}s; upstreams ${UPSTREAMS} (${BACKEND}); threads ${THREADS}${RATE:+; rate $RATE req/s}${SWAP_MS:+; swap every ${SWAP_MS} ms}"
if [ "$ROUNDS" -gt 0 ]; then
    for t in "${TARGET_LIST[@]}"; do load "$t" "${CONN_LIST[0]}" "$WARMUP" >/dev/null; done
fi
for r in $(seq 1 "$ROUNDS"); do
    for c in "${CONN_LIST[@]}"; do
        for t in "${TARGET_LIST[@]}"; do run_one "$r" "$t" "$c"; done
    done
done
if [ "$ROUNDS" -gt 0 ]; then
    python3 "$HERE/summarize.py" "$TSV"
    if [ -n "$OUT" ]; then mkdir -p "$(dirname "$OUT")"; cp "$TSV" "$OUT"; log "results: $OUT"; fi
fi

# --- profile -----------------------------------------------------------------------------------
if [ -n "$PROFILE" ]; then
    command -v perf >/dev/null || { echo "load.sh: --profile needs perf (apt-get install linux-perf)" >&2; exit 69; }
    t=${TARGET_LIST[0]}
    load "$t" "${CONN_LIST[0]}" "$WARMUP" >/dev/null
    load "$t" "${CONN_LIST[0]}" "$DURATION" >"$RUN/profile-load.txt" &
    lp=$!
    sleep 0.5
    perf record -q -F 1999 -g -o "$RUN/perf.data" -p "$(cpu_pids "$t" | tr ' ' ',' | sed 's/,$//')" -- sleep $((DURATION - 1)) 2>/dev/null
    wait "$lp" || true
    { echo "# perf record -F 1999 -g on $t, ${CONN_LIST[0]} connections, $((DURATION - 1)) s; wrk: $(cat "$RUN/profile-load.txt")"
      perf report -i "$RUN/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep "%"
      echo "# top symbols"
      perf report -i "$RUN/perf.data" --no-children --sort dso,symbol --stdio -g none --percent-limit 0.3 2>/dev/null | grep "%" | sed -E "s/ +- +- *$//; s/ {2,}/  /g" | cut -c1-160
    } >"$PROFILE"
    log "profile: $PROFILE"
    head -50 "$PROFILE"
fi

# --- system calls per request --------------------------------------------------------------------
if [ -n "$SYSCALLS" ]; then
    command -v strace >/dev/null || { echo "load.sh: --syscalls needs strace" >&2; exit 69; }
    : >"$SYSCALLS"
    for t in "${TARGET_LIST[@]}"; do
        [ "$t" = zerodown_swap ] && continue
        sargs=()
        for p in $(cpu_pids "$t"); do sargs+=(-p "$p"); done
        strace -c -f -o "$RUN/strace-$t.txt" "${sargs[@]}" &
        sp=$!
        sleep 0.5
        res=$(load "$t" "${CONN_LIST[0]}" "$DURATION")
        kill -INT "$sp"; wait "$sp" 2>/dev/null || true
        req=${res%% *}
        python3 - "$t" "$req" "$RUN/strace-$t.txt" >>"$SYSCALLS" <<'PY'
import sys
t, req, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows, total = [], 0
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
        calls = int(f[3]); name = f[-1]; rows.append((calls, name)); total += calls
rows.sort(reverse=True)
print(f"{t}\trequests={req}\tsyscalls/request={total / req:.2f}\t" + " ".join(f"{n}={c / req:.2f}" for c, n in rows[:8]))
PY
        tail -n1 "$SYSCALLS" >&2
    done
fi

# --- idle keep-alive connections ---------------------------------------------------------------
if [ -n "$IDLE_CONNS" ]; then
    ITSV="$RUN/idle.tsv"
    printf 'target	conns_asked	conns_answered	established_at_measure	rss_before_kb	rss_with_kb	rss_per_conn_b	peak_rss_kb
' >"$ITSV"
    for t in "${TARGET_LIST[@]}"; do
        [ "$t" = zerodown_swap ] && continue
        rp=$(rss_pids "$t")
        before=$(kb VmRSS $rp)
        fifo="$RUN/idle-$t.out"
        # Opens N connections (500 at a time), one GET /hello each, reads the answer, then holds
        # them all open; prints "ready OK" once all are answered and sleeps until killed.
        taskset -c "$LOAD_CPUS" python3 - "${PORT[$t]}" "$IDLE_CONNS" >"$fifo" 2>&1 <<'PY' &
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
REQ = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
held = []
async def one(sem):
    async with sem:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(REQ)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await asyncio.wait_for(r.readexactly(length), 10)
            held.append((r, w))
            return head.startswith(b"HTTP/1.1 200")
        except Exception:
            return False
async def main():
    sem = asyncio.Semaphore(500)
    ok = sum(await asyncio.gather(*(one(sem) for _ in range(n))))
    print("ready", ok, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
        holder=$!
        for _ in $(seq 1 600); do grep -q '^ready' "$fifo" 2>/dev/null && break; sleep 0.1; done
        sleep 0.5
        ok=$(awk '$1 == "ready" { print $2 }' "$fifo")
        est=$(ss -Htn state established "( sport = :${PORT[$t]} )" | wc -l)
        with=$(kb VmRSS $rp)
        hwm=$(kb VmHWM $rp)
        kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
        per=$(( ok > 0 ? (with - before) * 1024 / ok : 0 ))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$IDLE_CONNS" "${ok:-0}" "$est" "$before" "$with" "$per" "$hwm" >>"$ITSV"
        log "idle: $t: ${ok:-0}/$IDLE_CONNS answered, $est established; RSS $((before / 1024)) MB -> $((with / 1024)) MB (~$per B/conn)"
        sleep 1
    done
    column -t -s $'\t' "$ITSV" 2>/dev/null || cat "$ITSV"
    if [ -n "$OUT" ]; then mkdir -p "$(dirname "$OUT")"; cp "$ITSV" "${OUT%.tsv}.idle.tsv"; log "idle results: ${OUT%.tsv}.idle.tsv"; fi
fi
