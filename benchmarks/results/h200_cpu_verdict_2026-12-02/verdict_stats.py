"""Statistics over repeated `scaletrain bench scaling --interleave` invocations.

usage: python verdict_stats.py FOLDER [--md]
Reads every FOLDER/*.json written by the benchmark (scaling.json renamed). For each
(mode, N) it takes `per_worker_vs_own` (the Markdown column "per worker / own plain"),
`master_busy` and `worker_exchange` ("worker on exchanges"); for the 1-process framework
`framework.per_worker_vs_own` (overhead = 1 - ratio, the JSON's `overhead_paired`).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ASYNC_TARGET = 0.95
OVERHEAD_TARGET = 0.03


def t95(df: int) -> float:
    """Two-sided 95 % Student t quantile."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}
        return table.get(df, 2.0)


def summary(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else float("nan")
    sem = sd / math.sqrt(n) if n > 1 else float("nan")
    half = t95(n - 1) * sem if n > 1 else float("nan")
    return {
        "n": n,
        "mean": mean,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "sd": sd,
        "sem": sem,
        "lo": mean - half,
        "hi": mean + half,
    }


def pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}%}"


def load(folder: Path) -> list[tuple[str, dict]]:
    runs = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if "rows" in data and "framework" in data:
            runs.append((path.stem, data))
    return runs


def main() -> None:
    folder = Path(sys.argv[1])
    runs = load(folder)
    out: list[str] = []
    w = out.append
    w(f"Runs: {len(runs)} ({', '.join(name for name, _ in runs)})")
    w("")
    w(
        "Load average (1 min) at start / end of each run: "
        + "; ".join(
            f"{name} {load['start']} / {load['end']}"
            for name, load in ((n, d["settings"]["load_average"]) for n, d in runs)
        )
    )
    w("")

    # asynchronous rows
    points: dict[tuple[str, int], list[dict]] = {}
    for _, d in runs:
        for row in d["rows"]:
            points.setdefault((row["mode"], row["processes"]), []).append(row)
    w(
        "Per worker / own plain (`per_worker_vs_own`), one value per run; SEM = sd/sqrt(n); "
        "95 % CI = mean ± t(n-1)·SEM; master busy and worker on exchanges: mean over runs."
    )
    w("")
    w(
        "| mode | N | runs | mean | median | min | max | SEM | 95 % CI of mean | runs >= 95 % "
        "| master busy | worker on exchanges | values |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    pooled: list[float] = []
    single: list[float] = []
    for (mode, n), rows in points.items():
        vals = [r["per_worker_vs_own"] for r in rows if r.get("per_worker_vs_own") is not None]
        if not vals:
            continue
        pooled += vals
        for r in rows:  # each worker against its own plain blocks
            for rate, own in zip(
                r["worker_samples_per_s"], r["own_plain_samples_per_s"], strict=True
            ):
                single.append(rate / statistics.fmean(own))
        s = summary(vals)
        busy = [r["master_busy"] for r in rows if r.get("master_busy") is not None]
        exch = [r["worker_exchange"] for r in rows if r.get("worker_exchange") is not None]
        hits = sum(v >= ASYNC_TARGET for v in vals)
        w(
            f"| {mode} | {n} | {s['n']} | {pct(s['mean'])} | {pct(s['median'])} | {pct(s['min'])} "
            f"| {pct(s['max'])} | {pct(s['sem'])} | {pct(s['lo'])} – {pct(s['hi'])} "
            f"| {hits}/{s['n']} | {pct(statistics.fmean(busy) if busy else None)} "
            f"| {pct(statistics.fmean(exch) if exch else None)} "
            f"| {', '.join(pct(v) for v in vals)} |"
        )
    for label, vals in (
        ("all async rows, pooled", pooled),
        ("all async workers, pooled (each worker / its own plain)", single),
    ):
        if not vals:
            continue
        s = summary(vals)
        hits = sum(v >= ASYNC_TARGET for v in vals)
        w(
            f"| {label} | | {s['n']} | {pct(s['mean'])} | {pct(s['median'])} | {pct(s['min'])} "
            f"| {pct(s['max'])} | {pct(s['sem'])} | {pct(s['lo'])} – {pct(s['hi'])} "
            f"| {hits}/{s['n']} | | | |"
        )
    w("")

    w(
        "Pooled lines treat every value as independent (rows and workers of one run share its "
        "seconds on the host), so their SEM and CI are optimistic."
    )
    w("")
    w(
        "The benchmark's own verdict per run (`targets`): "
        + "; ".join(
            f"{name}: overhead {d['targets']['overhead']['status']}, async per worker "
            f"{d['targets']['async_per_worker']['status']}"
            for name, d in runs
        )
    )
    w("")

    # framework, 1 process
    ratios = [
        d["framework"]["per_worker_vs_own"]
        for _, d in runs
        if d["framework"].get("per_worker_vs_own") is not None
    ]
    w(
        "Framework, 1 process, interleaved with its own plain loop (`framework.per_worker_vs_own`; "
        "overhead = 1 − ratio = `overhead_paired`); for comparison the unpaired overhead "
        "(`overhead`, separate plain-loop run) and by CPU time (`overhead_cpu_time`)."
    )
    w("")
    w("| run | ratio | overhead (paired) | overhead (unpaired) | overhead (CPU time) |")
    w("|---|---:|---:|---:|---:|")
    for name, d in runs:
        f = d["framework"]
        w(
            f"| {name} | {pct(f.get('per_worker_vs_own'))} | {pct(d.get('overhead_paired'))} "
            f"| {pct(d.get('overhead'))} | {pct(d.get('overhead_cpu_time'))} |"
        )
    if ratios:
        s = summary(ratios)
        over = [1 - v for v in ratios]
        hits = sum(o <= OVERHEAD_TARGET for o in over)
        w("")
        w(
            "| | runs | mean | median | min | max | SEM | 95 % CI of mean "
            "| runs with overhead <= 3 % |"
        )
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        w(
            f"| ratio | {s['n']} | {pct(s['mean'])} | {pct(s['median'])} | {pct(s['min'])} "
            f"| {pct(s['max'])} | {pct(s['sem'])} | {pct(s['lo'])} – {pct(s['hi'])} | |"
        )
        so = summary(over)
        w(
            f"| overhead | {so['n']} | {pct(so['mean'])} | {pct(so['median'])} | {pct(so['min'])} "
            f"| {pct(so['max'])} | {pct(so['sem'])} | {pct(so['lo'])} – {pct(so['hi'])} "
            f"| {hits}/{so['n']} |"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
