#!/usr/bin/env python3
"""Summarises the per-run TSV written by benches/load.sh (and benches/scale.sh).

Usage: benches/summarize.py RESULTS.tsv [--markdown]

Per (connections, rate, target): runs, req/s median [min-max], p50 and p99 median [min-max],
proxy CPU seconds per 100k requests median [min-max], CPU utilisation, peak RSS, errors.
Ratios against nginx are computed round by round (same round, same connections: the runs closest
in time), then summarised as median [min-max]; every zerodown target is also compared to `floor`
(the bare hyper proxy), and `zerodown_swap` and `zerodown_shipped` to `zerodown`.
"""
import csv
import statistics
import sys
from collections import defaultdict


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    if not xs:
        return "-"
    return f"{fmt.format(med(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def main():
    path = sys.argv[1]
    md = "--markdown" in sys.argv
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    if not rows:
        print("no runs")
        return
    groups = defaultdict(list)
    by_round = {}
    order = []
    for r in rows:
        key = (r["connections"], r["rate"])
        if key not in order:
            order.append(key)
        groups[key + (r["target"],)].append(r)
        by_round[(r["round"], r["connections"], r["rate"], r["target"])] = r
    targets = []
    for r in rows:
        if r["target"] not in targets:
            targets.append(r["target"])

    f = lambda rs, k: [float(x[k]) for x in rs if x[k] not in ("", "nan")]
    head = ["conns", "rate", "target", "runs", "req/s med [min-max]", "p50 us", "p99 us med [min-max]",
            "cpu s/100k med [min-max]", "util", "peak RSS MB", "errors"]
    table = []
    for key in order:
        for t in targets:
            rs = groups.get(key + (t,), [])
            if not rs:
                continue
            errs = sum(int(x["errors"]) + int(x["non2xx"]) for x in rs)
            table.append([key[0], key[1], t, str(len(rs)), spread(f(rs, "rps")), f"{med(f(rs, 'p50_us')):.0f}",
                          spread(f(rs, "p99_us")), spread(f(rs, "cpu_s_per_100k"), "{:.2f}"),
                          f"{med(f(rs, 'util')):.2f}", f"{max(f(rs, 'peak_rss_kb')) / 1024:.1f}", str(errs)])
    emit(head, table, md)

    # Ratios, round by round.
    head = ["conns", "rate", "target", "vs", "req/s ratio", "cpu/req ratio", "p99 ratio", "p50 ratio"]
    table = []
    pairs = [(t, "nginx") for t in targets if t != "nginx"]
    if "floor" in targets:
        pairs += [(t, "floor") for t in targets if t.startswith("zerodown")]
    for other in ("zerodown_swap", "zerodown_shipped"):
        if other in targets and "zerodown" in targets:
            pairs.append((other, "zerodown"))
    rounds = sorted({r["round"] for r in rows}, key=int)
    for key in order:
        for t, base in pairs:
            ratios = defaultdict(list)
            for rd in rounds:
                a = by_round.get((rd, key[0], key[1], t))
                b = by_round.get((rd, key[0], key[1], base))
                if not a or not b:
                    continue
                for col, name in [("rps", "rps"), ("cpu_s_per_100k", "cpu"), ("p99_us", "p99"), ("p50_us", "p50")]:
                    try:
                        ratios[name].append(float(a[col]) / float(b[col]))
                    except (ValueError, ZeroDivisionError):
                        pass
            if ratios:
                table.append([key[0], key[1], t, base] + [spread(ratios[n], "{:.3f}") for n in ("rps", "cpu", "p99", "p50")])
    if table:
        print()
        emit(head, table, md)
    swaps = [int(r["swaps"]) for r in rows if r["target"] == "zerodown_swap"]
    if swaps:
        durs = [float(r["duration_s"]) for r in rows if r["target"] == "zerodown_swap"]
        print(f"\nswaps published during zerodown_swap runs: {swaps} (~{sum(swaps) / sum(durs):.0f}/s)")


def emit(head, table, md):
    if md:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in table:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
