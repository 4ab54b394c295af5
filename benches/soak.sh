#!/usr/bin/env bash
# The soak under faults (issue 16, item 4; not in CI). Builds zerodown and the driver
# (benches/soak/, a harness-less bench target) in release mode, runs the driver, and writes its
# report into benches/RESULTS.md (section "Soak") with the raw files under benches/results/soak/.
#
#   benches/soak.sh                  # 10 min of faults (plus 20 s warm-up and 15 s idle)
#   benches/soak.sh --minutes 1      # a smoke; SOAK_MINUTES=1 works too
#   benches/soak.sh --minutes 1 --no-record   # keep RESULTS.md as it is (output in target/soak/)
#   benches/soak.sh --minutes 1 --mix         # negative check: versions mixed on purpose; must exit 1
#   benches/soak.sh --minutes 1 --max-requests 300   # many more h2 GOAWAYs / HTTP/1 closes at the cap
#
# Everything runs on 127.0.0.1 (ephemeral ports); every process the run starts is in one process
# group, which is killed at exit whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${SOAK_MINUTES:-10}"
slowloris=1000
record=1
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --slowloris) slowloris="$2"; shift 2 ;;
        --no-record) record=0; shift ;;
        --mix) extra+=(--mix); record=0; shift ;;
        --max-requests) extra+=(--max-requests "$2"); record=0; shift 2 ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
jobs="${JOBS:-1}"
echo "soak.sh: building (release, -j $jobs)..." >&2
cargo build --release -j "$jobs" --bin zerodown >&2
driver=$(cargo build --release -j "$jobs" --bench soak --message-format=json \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "soak" and m.get("executable"):
        print(m["executable"])')
[ -x "$driver" ] || { echo "soak.sh: driver not built" >&2; exit 1; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$target_dir/soak/$stamp"
mkdir -p "$out"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

pgid=""
cleanup() {
    if [ -n "$pgid" ] && kill -0 -- "-$pgid" 2>/dev/null; then
        kill -TERM -- "-$pgid" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The run is bounded: warm-up + faults + drain + settle, plus a margin.
limit=$(python3 -c "print(int(float('$minutes') * 60 + 20 + 15 + 180))")
started=$(date +%s)
setsid timeout --signal=TERM --kill-after=30 "$limit" \
    "$driver" --minutes "$minutes" --slowloris "$slowloris" "${extra[@]}" \
    --zerodown "$target_dir/release/zerodown" --out "$out" 2> >(tee "$out/driver.log" >&2) &
pgid=$!
status=0
wait "$pgid" || status=$?
pgid_done=$pgid
pgid=""
kill -KILL -- "-$pgid_done" 2>/dev/null || true
elapsed=$(( $(date +%s) - started ))
echo "soak.sh: driver exited $status after ${elapsed} s; output in $out" >&2
[ -f "$out/report.md" ] || exit "${status:-1}"

if [ "$record" = 1 ]; then
    raw="benches/results/soak"
    mkdir -p "$raw"
    for f in report.md switches.tsv events.tsv failures.tsv samples.tsv; do
        cp "$out/$f" "$raw/$f"
    done
    commit=$(git rev-parse --short HEAD)
    dirty=$(git diff --quiet HEAD -- src benches/soak && echo "" || echo " (with uncommitted changes)")
    {
        echo "<!-- soak:begin (written by benches/soak.sh) -->"
        echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), \`benches/soak.sh --minutes $minutes\`, release build of \`$commit\`$dirty, $(nproc) CPUs, ${elapsed} s wall; raw files in \`benches/results/soak/\`, driver exit $status."
        echo
        cat "$out/report.md"
        echo "<!-- soak:end -->"
    } > "$out/section.md"
    python3 - "$out/section.md" <<'EOF'
import re, sys
section = open(sys.argv[1]).read()
path = "benches/RESULTS.md"
text = open(path).read()
pat = re.compile(r"<!-- soak:begin.*?<!-- soak:end -->\n", re.S)
if pat.search(text):
    text = pat.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n## Soak under faults (`benches/soak.sh`)\n\n" + section
open(path, "w").write(text)
EOF
    echo "soak.sh: report written to benches/RESULTS.md (section Soak) and $raw/" >&2
fi
exit "$status"
