"""`bench scaling`'s results: a row per mode and process count, the figures derived from the
rows (speed-up, efficiency, the ratios to the plain loop), the targets, and the outputs
(scaling.json, scaling.md, scaling.png, the console table)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaletrain.parallel import PS_MODES

MODES = ("allreduce", *PS_MODES)

# the targets of distributed training, checked in the report (not in tests)
OVERHEAD_MAX = 0.03  # framework on 1 process vs the plain loop
ASYNC_PER_WORKER_MIN = 0.95  # asynchronous modes, per worker vs the plain loop, on CPU
ALLREDUCE_EFFICIENCY_MIN = 0.97  # allreduce scaling efficiency on GPUs


# ---------------------------------------------------------------------------- results


@dataclass
class ScalingRow:
    mode: str  # "plain" (hand-written loop), "none" (framework, 1 process) or a mode
    processes: int
    workers: int  # processes that train (N minus parameter servers)
    servers: int = 0
    samples_per_s: float | None = None  # all workers together
    per_worker_samples_per_s: float | None = None
    ms_per_step: float | None = None  # mean over workers
    cpu_ms_per_step: float | None = None  # CPU time of a worker process per step, mean
    speedup: float | None = None  # samples_per_s / plain loop
    efficiency: float | None = None  # samples_per_s / (workers × plain loop)
    per_worker_ratio: float | None = None  # per worker / plain loop
    # per worker / per process of N plain loops run at once (--concurrent-plain): the share
    # of what the machine itself leaves N busy processes
    per_worker_vs_concurrent: float | None = None
    # --paired: each worker's rate over that of the plain loop it ran itself just before and
    # just after (mean over workers): free of the speed a process happens to get at its start
    per_worker_vs_own: float | None = None
    staleness_mean: float | None = None
    staleness_max: float | None = None
    ps_updates: int | None = None
    master_busy: float | None = None  # share of the run the master(s) spent on updates, mean
    # share of the window the workers' training threads spent on exchanges (waiting for a
    # reply, folding it in, handing the next one off), mean over workers
    worker_exchange: float | None = None
    seconds: float = 0.0  # wall time of the whole run, start-up included
    target: str = ""
    note: str = ""  # why the run was skipped or failed
    task: str = ""  # what computed the step (e.g. FastGanTask: the trainer's GPU 3DGAN step)
    worker_samples_per_s: list[float] = field(default_factory=list)
    repeats_samples_per_s: list[float] = field(default_factory=list)
    own_plain_samples_per_s: list[list[float]] = field(default_factory=list)  # [before, after]
    repeats_vs_own: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.samples_per_s is not None


@dataclass
class ScalingResult:
    settings: dict[str, Any]
    device: dict[str, Any]
    plain: ScalingRow
    framework: ScalingRow
    rows: list[ScalingRow]
    overhead: float | None
    targets: dict[str, Any]
    command: str = ""
    # the same comparison in CPU time per step (robust against other jobs on the cores)
    overhead_cpu_time: float | None = None
    # --paired: the 1-process framework against the plain loop run in its own process
    overhead_paired: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScalingResult:
        """Back from scaling.json (to re-render its Markdown and plot)."""
        rows = {k: ScalingRow(**d[k]) for k in ("plain", "framework")}
        return cls(**{**d, **rows, "rows": [ScalingRow(**r) for r in d["rows"]]})

    @property
    def failed(self) -> list[ScalingRow]:
        return [r for r in (self.plain, self.framework, *self.rows) if r.note.startswith("failed")]


def derive(row: ScalingRow, plain_rate: float | None) -> None:
    """Speedup, efficiency and per-worker ratio from the measured rates (and nothing else)."""
    if not row.ok or not plain_rate:
        return
    row.speedup = round(row.samples_per_s / plain_rate, 4)
    row.efficiency = round(row.samples_per_s / (row.workers * plain_rate), 4)
    row.per_worker_ratio = round(row.per_worker_samples_per_s / plain_rate, 4)


def derive_concurrent(rows: list[ScalingRow]) -> None:
    """Each mode's per-worker rate against N plain loops run at once on the same N."""
    at_once = {r.processes: r for r in rows if r.mode == "plain" and r.ok}
    for row in rows:
        ceiling = at_once.get(row.processes)
        if row.mode != "plain" and row.ok and ceiling is not None:
            row.per_worker_vs_concurrent = round(
                row.per_worker_samples_per_s / ceiling.per_worker_samples_per_s, 4
            )


def check_targets(
    device: str,
    framework: ScalingRow,
    rows: list[ScalingRow],
    overhead: float | None,
    gpus: int | None = None,
) -> dict[str, Any]:
    """The targets, met or not, with the values they were judged on. All-reduce
    efficiency is judged only where every process has a GPU of its own (N <= gpus). A worker
    measured against its own plain loop (--paired) is judged on that ratio: the one least
    affected by the speed a process gets at its start."""

    def verdict(values: list[bool]) -> str:
        return "met" if values and all(values) else "not met" if values else "not measured"

    out: dict[str, Any] = {}
    ok = overhead is not None and overhead <= OVERHEAD_MAX
    out["overhead"] = {
        "target": f"framework overhead at 1 process <= {OVERHEAD_MAX:.0%}",
        "value": overhead,
        "status": verdict([ok] if overhead is not None else []),
    }
    if overhead is not None:
        framework.target = f"overhead {overhead:.1%}: {'met' if ok else 'not met'}"
    async_rows = [r for r in rows if r.mode in PS_MODES and r.ok]
    allreduce_rows = [
        r
        for r in rows
        if r.mode == "allreduce" and r.ok and 1 < r.processes <= (gpus or r.processes)
    ]
    if device == "cpu":
        checks = []
        values = {}
        for r in async_rows:
            ratio = r.per_worker_vs_own if r.per_worker_vs_own is not None else r.per_worker_ratio
            met = ratio is not None and ratio >= ASYNC_PER_WORKER_MIN
            r.target = f"per worker >= {ASYNC_PER_WORKER_MIN:.0%}: {'met' if met else 'not met'}"
            checks.append(met)
            values[f"{r.mode} np={r.processes}"] = ratio
        paired = any(r.per_worker_vs_own is not None for r in async_rows)
        out["async_per_worker"] = {
            "target": f"asynchronous modes, per-worker throughput >= {ASYNC_PER_WORKER_MIN:.0%} "
            "of the plain loop (CPU" + (", each worker against its own)" if paired else ")"),
            "status": verdict(checks), "values": values,
        }  # fmt: skip
    else:
        for r in rows:
            if r.mode == "allreduce" and r.ok and gpus and r.processes > gpus:
                r.target = f"{r.processes} processes on {gpus} GPUs: not judged"
        checks = []
        for r in allreduce_rows:
            met = r.efficiency is not None and r.efficiency >= ALLREDUCE_EFFICIENCY_MIN
            r.target = (
                f"efficiency >= {ALLREDUCE_EFFICIENCY_MIN:.0%}: {'met' if met else 'not met'}"
            )
            checks.append(met)
        out["allreduce_efficiency"] = {
            "target": f"allreduce scaling efficiency >= {ALLREDUCE_EFFICIENCY_MIN:.0%} (GPU)",
            "status": verdict(checks),
            "values": {f"np={r.processes}": r.efficiency for r in allreduce_rows},
        }
    return out


# ---------------------------------------------------------------------------- outputs


# header -> (attribute, format, short header); the Markdown file and the console table
COLUMNS: dict[str, tuple[str, str, str]] = {
    "mode": ("mode", "{}", "mode"),
    "processes": ("processes", "{}", "N"),
    "workers": ("workers", "{}", "workers"),
    "samples/s": ("samples_per_s", "{:,.1f}", "samples/s"),
    "per worker": ("per_worker_samples_per_s", "{:,.1f}", "per worker"),
    "ms/step": ("ms_per_step", "{:.2f}", "ms/step"),
    "CPU ms/step": ("cpu_ms_per_step", "{:.2f}", "CPU ms"),
    "speedup": ("speedup", "{:.2f}", "speedup"),
    "efficiency": ("efficiency", "{:.1%}", "eff."),
    "per worker / plain": ("per_worker_ratio", "{:.1%}", "worker/plain"),
    "per worker / N plain at once": ("per_worker_vs_concurrent", "{:.1%}", "/N plain"),
    "per worker / own plain": ("per_worker_vs_own", "{:.1%}", "/own plain"),
    "staleness mean / max": ("staleness", "{}", "staleness"),
    "master busy": ("master_busy", "{:.0%}", "master busy"),
    "worker on exchanges": ("worker_exchange", "{:.1%}", "exchanges"),
    "target": ("target", "{}", "target"),
}


def mode_label(row: ScalingRow) -> str:
    if row.mode == "plain":
        return "plain loops at once" if row.processes > 1 else "plain loop"
    return "framework 1 proc." if row.mode == "none" else row.mode


def cells(row: ScalingRow) -> list[str]:
    """The row as the table's strings ("—" where a value does not apply)."""
    out = []
    for attr, fmt, _ in COLUMNS.values():
        if attr == "staleness":
            value = (
                f"{row.staleness_mean:.2f} / {row.staleness_max:.0f}"
                if row.staleness_mean is not None
                else None
            )
        else:
            value = getattr(row, attr)
        if attr == "mode":
            value = mode_label(row)
        if attr == "target" and row.note:
            value = row.note
        text = "—" if value is None or value == "" else fmt.format(value)
        if attr == "per_worker_vs_own" and len(row.repeats_vs_own) > 1:  # the runs' spread
            text += f" ({min(row.repeats_vs_own):.1%}–{max(row.repeats_vs_own):.1%})"
        out.append(text)
    return out


def table_rows(result: ScalingResult) -> list[list[str]]:
    return [cells(r) for r in (result.plain, result.framework, *result.rows)]


def markdown(result: ScalingResult) -> str:
    s, dev = result.settings, result.device
    name = dev.get("name") or dev.get("device", s["device"])
    load = s.get("load_average", {})
    lines = [
        f"# Scaling: {s['model']}, batch {s['batch_size']} per process, {s['precision']}, "
        f"{s['device']}",
        "",
        f"Command: `{result.command}`" if result.command else "",
        "",
        f"Device: {name} (torch {dev.get('torch', '?')}, host {dev.get('host', '?')}, "
        f"{s['cpu_count']} CPU cores, {s['threads']} torch thread(s) per process). "
        f"{s['steps']} timed steps after {s['warmup']} warm-up steps per process; median of "
        f"{s['repeats']} run(s). Samples are counted on workers only (parameter-server modes: "
        f"N processes = 1 master + N - 1 workers); efficiency = samples/s ÷ (workers × plain "
        f"loop); staleness as measured by the master over the whole run, master busy the "
        f"share of the run it spent receiving, applying and answering updates (sending "
        f"included). Load average "
        f"(1 min) at start / end: {load.get('start')} / {load.get('end')}.",
        "",
        f"Step: {result.plain.task or 'plain loop'}; framework: {result.framework.task or '?'}.",
        "",
    ]
    if any(r.mode == "plain" for r in result.rows):
        lines += [
            "Plain loops at once: N copies of the plain loop started together, with no "
            "communication: what the machine itself leaves each of N busy processes (shared "
            "caches, memory bandwidth, clock). Each mode's workers are compared with it at the "
            "same N (per worker / N plain at once).",
            "",
        ]
    if s.get("paired"):
        lines += [
            "Paired (--paired): every training process also ran the plain loop itself, just "
            "before and just after its framework window, all processes at once (a master "
            "waits meanwhile); per worker / own plain is its framework rate over the mean of "
            "those two, averaged over the workers. A process's speed differs from start to "
            "start; this ratio compares each with itself, and the targets are judged on it.",
            "",
        ]
    if s.get("interleave"):
        lines += [
            f"Interleaved (--interleave {s['interleave']}): every training process alternated "
            f"spans of {s['interleave']} framework steps with as many steps of the plain loop "
            "(a model, optimizer and data of its own, in the same process), the training "
            "processes starting each span together (a master serves on); per worker / own "
            "plain is its framework rate over its spans against its plain loop's over its "
            "blocks, averaged over the workers. Both are measured over the same seconds, so a "
            "host whose speed drifts slows both alike; the targets are judged on this ratio. "
            "A plain block lets the round trip in flight finish: one exchange per span costs "
            "the worker no wait.",
            "",
        ]
    headers = list(COLUMNS)
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if i < 1 else "---:" for i in range(len(headers))) + "|")
    for row in table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    if result.overhead_cpu_time is not None:
        lines += [
            "",
            f"Framework overhead by CPU time per step (hardly affected by other jobs on the "
            f"cores): {result.overhead_cpu_time:.1%} (plain loop "
            f"{result.plain.cpu_ms_per_step:.2f} ms, framework "
            f"{result.framework.cpu_ms_per_step:.2f} ms).",
        ]
    if result.overhead_paired is not None:
        own = result.framework.own_plain_samples_per_s[0]
        which = "before / after" if len(own) == 2 else "in the blocks between"
        lines += [
            "",
            f"Framework overhead against the plain loop in its own process: "
            f"{result.overhead_paired:.1%} (plain loop {which}: "
            f"{' / '.join(f'{v:,.1f}' for v in own)} samples/s).",
        ]
    lines += ["", "Targets:", ""]
    for target in result.targets.values():
        value = target.get("value")
        detail = f" ({value:.1%})" if isinstance(value, float) else ""
        lines.append(f"- {target['target']}: **{target['status']}**{detail}")
    if s["device"] == "cpu":
        lines.append(
            f"- allreduce scaling efficiency >= {ALLREDUCE_EFFICIENCY_MIN:.0%}: a GPU target, "
            "not judged on CPU"
        )
    return "\n".join(lines) + "\n"


def plot(result: ScalingResult, path: Path) -> None:
    """Samples/s and efficiency against processes, per mode, with the ideal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = result.plain.samples_per_s or 0.0
    fig, (ax, ax_eff) = plt.subplots(1, 2, figsize=(11, 4.2))
    nps = sorted({r.processes for r in result.rows} | {1})
    if plain:
        ax.plot(nps, [n * plain for n in nps], "k--", lw=1, label="ideal: N × plain loop")
        if any(r.mode in PS_MODES for r in result.rows):
            ps = [n for n in nps if n > 1]
            ax.plot(ps, [(n - 1) * plain for n in ps], "k:", lw=1,
                    label="ideal with 1 master: (N − 1) × plain")  # fmt: skip
        ax.plot([1], [plain], "k*", ms=10, label="plain PyTorch loop")
    if result.framework.ok:
        ax.plot([1], [result.framework.samples_per_s], "kx", ms=8, label="framework, 1 process")
    for mode in dict.fromkeys(r.mode for r in result.rows):
        ok = [r for r in result.rows if r.mode == mode and r.ok]
        if ok:
            xs = [r.processes for r in ok]
            label, style = ("N plain loops at once", "s--") if mode == "plain" else (mode, "o-")
            ax.plot(xs, [r.samples_per_s for r in ok], style, label=label)
            line = ax_eff.plot(xs, [100 * (r.efficiency or 0.0) for r in ok], style, label=label)
            own = [r for r in ok if r.per_worker_vs_own is not None]  # --paired
            if own:
                ax_eff.plot([r.processes for r in own], [100 * r.per_worker_vs_own for r in own],
                            "x:", color=line[0].get_color(),
                            label=f"{label}: per worker / own plain")  # fmt: skip
    ax.set(xlabel="processes N", ylabel="training samples/s (workers)", xticks=nps)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax_eff.axhline(100, color="k", ls="--", lw=1)
    cpu = result.settings["device"] == "cpu"
    if not cpu:
        target, what = ALLREDUCE_EFFICIENCY_MIN, "all-reduce"
    elif any(r.mode in PS_MODES for r in result.rows):
        target, what = ASYNC_PER_WORKER_MIN, "per worker, asynchronous"
    else:
        target = None
    if target:
        ax_eff.axhline(100 * target, color="r", ls=":", lw=1, label=f"target {target:.0%} ({what})")
    ylabel = "efficiency: samples/s ÷ (workers × plain) [%]"
    if any(r.per_worker_vs_own is not None for r in result.rows):
        ylabel = "efficiency (o), per worker / own plain loop (x) [%]"
    ax_eff.set(xlabel="processes N", ylabel=ylabel, xticks=nps)
    ax_eff.set_ylim(bottom=0)
    ax_eff.grid(alpha=0.3)
    ax_eff.legend(fontsize=8)
    s = result.settings
    fig.suptitle(f"{s['model']}, batch {s['batch_size']}/process, {s['precision']}, "
                 f"{result.device.get('name') or s['device']}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: ScalingResult, out_dir: Path) -> None:
    (out_dir / "scaling.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (out_dir / "scaling.md").write_text(markdown(result))
    plot(result, out_dir / "scaling.png")
