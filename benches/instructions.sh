#!/usr/bin/env bash
# CPU cost per request that a noisy machine cannot blur: each proxy runs under
# `valgrind --tool=callgrind`, which counts the instructions it executes in user space. Two runs
# per proxy (N1 and N2 keep-alive requests) cancel start-up and shutdown:
#   instructions per request = (Ir(N2) - Ir(N1)) / (N2 - N1).
# Kernel work (system calls) is not counted: `load.sh --syscalls` counts those, and they are
# already equal (about 4 per request for every proxy). Not part of CI.
# `floor` is examples/floor.rs: a bare hyper + tokio proxy built from the same locked versions,
# the least zerodown's stack can cost. Ratios are printed against nginx and against the floor.
#
# Usage: benches/instructions.sh [--targets zerodown,floor,nginx,haproxy] [--n1 2000] [--n2 10000]
#        [--connections 16] [--zerodown BIN] [--floor BIN] [--out FILE] [--access-log]
# --access-log: zerodown as shipped logs (level info, one JSON access line per request, stdout
# to /dev/null) instead of the bench config's warnings only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CONF="$HERE/conf"
# shellcheck source=benches/lib.sh
. "$HERE/lib.sh"
TARGETS="zerodown,floor,nginx,haproxy" N1=2000 N2=10000 CONNS=16 ZD_BIN="" FLOOR_BIN="" OUT="" ACCESS_LOG=""
while [ $# -gt 0 ]; do
    case "$1" in
    --targets) TARGETS=$2; shift ;;
    --n1) N1=$2; shift ;;
    --n2) N2=$2; shift ;;
    --connections) CONNS=$2; shift ;;
    --zerodown) ZD_BIN=$2; shift ;;
    --floor) FLOOR_BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --access-log) ACCESS_LOG=1 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done
ZD_BIN=${ZD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/zerodown}
for tool in valgrind oha nginx haproxy curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing (apt-get install valgrind nginx haproxy curl; cargo install oha)" >&2; exit 69; }
done
[ -x "$ZD_BIN" ] || (cd "$ROOT" && cargo build --release --locked)
FLOOR_BIN=${FLOOR_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/floor}
if [[ ",$TARGETS," == *",floor,"* ]] && [ ! -x "$FLOOR_BIN" ]; then
    (cd "$ROOT" && cargo build --release --locked --example floor)
fi

RUN=$(mktemp -d /tmp/zerodown-instr.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_RUN:-}" ] && echo "instructions.sh: kept $RUN" >&2 || rm -rf "$RUN"
}
trap cleanup EXIT
log() { printf '[instructions.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
wait_ok() { # wait_ok URL: up to 60 s (valgrind starts slowly)
    for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "instructions.sh: $1 never answered" >&2; exit 1
}

UP=127.0.0.1:19201 PORT=18201 ADMIN=18211
"$ZD_BIN" demo-backend --listen "$UP" --version v1 --message "Lionel Messi is the best player in the world!" \
    >"$RUN/up.log" 2>&1 &
PIDS+=($!)
wait_ok "http://$UP/hello"
printf '[[instances]]\nid = "up0"\naddress = "%s"\nversion = "v1"\ntags = ["active"]\n' "$UP" >"$RUN/upstreams.toml"

# run_under_callgrind TARGET REQUESTS: prints the total instruction count.
run_under_callgrind() {
    local t=$1 n=$2 out="$RUN/cg.$1.$2" cmd
    case "$t" in
    zerodown)
        render "$CONF/zerodown.toml" "$RUN/zerodown.toml" PORT=$PORT ADMIN=$ADMIN THREADS=1 POLL=1s
        if [ -n "$ACCESS_LOG" ]; then
            sed -i 's/^level = "warn"/level = "info"/; s/^access_log = false/access_log = true/' "$RUN/zerodown.toml"
            grep -q '^access_log = true' "$RUN/zerodown.toml" || { echo "instructions.sh: --access-log: the bench config changed" >&2; exit 70; }
        fi
        cmd=("$ZD_BIN" serve --config "$RUN/zerodown.toml" --threads 1) ;;
    floor)
        cmd=("$FLOOR_BIN" --listen "127.0.0.1:$PORT" --upstream "$UP" --threads 1) ;;
    nginx)
        mkdir -p "$RUN/logs"
        render "$CONF/nginx-proxy.conf" "$RUN/nginx.conf" RUN="$RUN" PORT=$PORT WORKERS=1 NOFILE=4096 WCONN=1024 \
            SERVERS="        server $UP max_fails=3 fail_timeout=10s;"
        # One process: the master's own share would otherwise be a second callgrind file.
        sed -i 's/^master_process on;/master_process off;/' "$RUN/nginx.conf"
        cmd=(nginx -p "$RUN" -c "$RUN/nginx.conf") ;;
    haproxy)
        render "$CONF/haproxy.cfg" "$RUN/haproxy.cfg" PORT=$PORT THREADS=1 MAXCONN=2048 SERVERS="    server s0 $UP"
        cmd=(haproxy -db -f "$RUN/haproxy.cfg") ;;
    *) echo "instructions.sh: unknown target $t" >&2; exit 64 ;;
    esac
    valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" >"$RUN/$t.$n.log" 2>&1 &
    local pid=$!
    wait_ok "http://127.0.0.1:$PORT/hello"
    oha -n "$n" -c "$CONNS" --no-tui "http://127.0.0.1:$PORT/hello" >"$RUN/oha.$t.$n" 2>&1
    grep -q '\[200\] '"$n"' responses' "$RUN/oha.$t.$n" || {
        echo "instructions.sh: $t did not answer all $n requests with 200:" >&2
        cat "$RUN/oha.$t.$n" >&2
        exit 1
    }
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

printf 'target\tn1\tn2\tIr_n1\tIr_n2\tinstructions_per_request\n' >"$RUN/result.tsv"
IFS=, read -ra TS <<<"$TARGETS"
for t in "${TS[@]}"; do
    log "$t: $N1 requests under callgrind"
    a=$(run_under_callgrind "$t" "$N1")
    log "$t: $N2 requests under callgrind"
    b=$(run_under_callgrind "$t" "$N2")
    per=$(python3 -c "print(round(($b - $a) / ($N2 - $N1)))")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$N1" "$N2" "$a" "$b" "$per" >>"$RUN/result.tsv"
    log "$t: $per instructions per request"
done
column -t "$RUN/result.tsv"
python3 - "$RUN/result.tsv" <<'PY'
import csv, sys
rows = {r["target"]: int(r["instructions_per_request"]) for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
for base in ("nginx", "floor"):
    if base in rows:
        for t, v in rows.items():
            if t != base:
                print(f"{t}: {v / rows[base]:.2f} x {base}'s instructions per request")
PY
[ -n "$OUT" ] && cp "$RUN/result.tsv" "$OUT"
exit 0
