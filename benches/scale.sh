#!/usr/bin/env bash
# Scale measurements (not part of CI), each a bounded benches/load.sh run:
#   1. idle RSS, and RSS with N idle keep-alive client connections (default 10,000);
#   2. req/s and p99 from 1 to 1,000 client connections;
#   3. req/s and p99 with 2, 100 and 1,000 upstream instances (64 connections).
# Usage: benches/scale.sh [--idle-conns N] [--rounds N] [--duration S] [--out-dir DIR] [--only idle|conns|upstreams]
# Results: DIR/scale-idle.idle.tsv, DIR/scale-conns.tsv, DIR/scale-upstreams-N.tsv [benches/results].
# About 10 minutes with the defaults.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IDLE=10000 ROUNDS=3 DURATION=5 OUTDIR="$HERE/results" ONLY="" EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
    --idle-conns) IDLE=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --out-dir) OUTDIR=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --zerodown) EXTRA+=(--zerodown "$2"); shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "scale.sh: unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
T=zerodown,floor,nginx,haproxy
if [ -z "$ONLY" ] || [ "$ONLY" = idle ]; then
    echo "== idle RSS and $IDLE idle keep-alive connections"
    "$HERE/load.sh" "${EXTRA[@]}" --targets "$T" --idle-only --idle-conns "$IDLE" \
        --max-conns $((2 * IDLE + 1024)) --out "$OUTDIR/scale-idle.tsv"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = conns ]; then
    echo "== 1 to 1,000 client connections"
    "$HERE/load.sh" "${EXTRA[@]}" --targets "$T" --connections 1,10,100,1000 --rounds "$ROUNDS" \
        --duration "$DURATION" --out "$OUTDIR/scale-conns.tsv"
fi
if [ -z "$ONLY" ] || [ "$ONLY" = upstreams ]; then
    for n in 2 100 1000; do
        echo "== $n upstream instances"
        "$HERE/load.sh" "${EXTRA[@]}" --targets "$T" --upstreams "$n" --rounds "$ROUNDS" \
            --duration "$DURATION" --out "$OUTDIR/scale-upstreams-$n.tsv"
    done
fi
