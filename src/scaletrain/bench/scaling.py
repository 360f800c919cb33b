"""`bench scaling`: framework training on 1..N processes against a plain PyTorch loop.

One invocation measures, each in its own fresh process (or MPI job):

- the *plain loop*: the same model, optimizer, batch, precision and device, trained by a
  hand-written loop (index a batch, forward, loss, zero_grad / backward / step) with no
  trainer, task, strategy or loader: the 1-process reference;
- the framework on one process (`parallel.mode: none`, what `scaletrain train` runs without
  --np): framework overhead = 1 - its samples/s / the plain loop's;
- every requested mode on N processes (`mpiexec -n N python -m scaletrain bench
  scaling-rank SPEC`), running the real `Trainer` with that mode's `Strategy`.

Data are synthetic and made inside each process (no files). Only steady-state steps are
timed: the trainer's `step_callback` stamps the end of step `warmup` and of step
`warmup + steps` (after the strategy's exchange), synchronising the GPU there; start-up,
rendezvous, the first steps, and the epoch-end validation and checkpoint lie outside that
window. Each run is one epoch of `warmup + steps + warmup` steps: the trailing steps keep
the asynchronous workers running together while any of them is still being timed.

Samples are counted on training processes only: with parameter servers, N processes are
masters + workers. Per mode and N: samples/s of all workers together, per worker, speedup
(÷ plain loop), efficiency (÷ workers × plain loop) and, for parameter servers, the
staleness the master measured (over the whole run, warm-up included).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from scaletrain.config import Config, apply_override, from_dict
from scaletrain.errors import ConfigError, ScaletrainError, TrainingError

MODES = ("allreduce", "downpour", "easgd", "gem")
PS_MODES = ("downpour", "easgd", "gem")
DATA_SOURCE = "scaletrain.bench.scaling:synthetic_data"

# targets of the distributed-training issue, checked in the report (not in tests)
OVERHEAD_MAX = 0.03  # framework on 1 process vs the plain loop
ASYNC_PER_WORKER_MIN = 0.95  # asynchronous modes, per worker vs the plain loop, on CPU
ALLREDUCE_EFFICIENCY_MIN = 0.97  # allreduce scaling efficiency on GPUs

# variables by which launchers tell a process it belongs to a job: the benchmark starts its
# own jobs, so they must not leak into them
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_", "MV2_")
_MPI_SETTINGS = ("OMPI_MCA_", "OMPI_ALLOW_RUN_AS_ROOT")


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: the config sections it needs and its synthetic data."""

    task: str
    data: str  # "vectors" (classification) or "showers" (3DGAN-like images)
    model_args: dict[str, Any]
    batch_size: int
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    # a small supervised model for CPUs: ~20 ms per step on one core
    "mlp": ModelSpec(
        task="supervised",
        data="vectors",
        model_args={"in_features": 512, "hidden": [512, 512], "n_classes": 10},
        batch_size=256,
        sections={"supervised": {"target": "label"}, "optim": {"name": "sgd", "lr": 0.01}},
        data_args={"features": 512, "classes": 10},
    ),
    "calo-cnn": ModelSpec(
        task="supervised",
        data="showers",
        model_args={},
        batch_size=32,
        sections={"supervised": {"target": "label"}},
    ),
    "tiny-3dgan": ModelSpec(
        task="gan",
        data="showers",
        model_args={"latent_size": 16},
        batch_size=16,
        sections={"gan": {"latent_size": 16}},
    ),
    # the published 3DGAN and its recipe (RMSprop 1e-3, batch 128)
    "3dgan": ModelSpec(task="gan", data="showers", model_args={}, batch_size=128),
}


# ---------------------------------------------------------------------------- data


def synthetic_data(
    kind: str = "vectors",
    n: int = 1024,
    features: int = 512,
    classes: int = 10,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Rows made in-process (the config's `data.source`): throughput does not depend on them.

    vectors: x (n, features) Gaussian, label = argmax of a fixed random linear map (learnable);
    showers: ECAL (n, 25, 25, 25) shower-like images in GeV and their primary energy, plus a
    label (energy above 255 GeV) for supervised models.
    """
    dev = torch.device(device)
    if kind == "vectors":
        rng = torch.Generator(device="cpu")
        rng.manual_seed(seed)
        x = torch.randn(n, features, generator=rng)
        teacher = torch.randn(features, classes, generator=rng)
        return {"x": x.to(dev), "label": (x @ teacher).argmax(dim=1).to(dev)}
    if kind == "showers":
        from scaletrain.bench.train_speed import synthetic_showers

        images, energy = synthetic_showers(n, dev, seed)
        return {"ECAL": images, "energy": energy, "label": (energy > 255.0).long()}
    raise ConfigError(f"synthetic_data: kind must be vectors or showers, not {kind!r}")


# ---------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What one benchmark invocation measures, as given (after defaults)."""

    modes: tuple[str, ...] = ("allreduce",)
    nps: tuple[int, ...] = (1, 2)
    model: str = "mlp"
    batch_size: int = 0  # per process; 0 = the model's default
    steps: int = 50
    warmup: int = 5
    device: str = "cpu"  # resolved: cpu or cuda
    threads: int = 1
    precision: str = "fp32"
    data_on_device: bool = True
    cudnn_benchmark: bool = True
    overrides: tuple[str, ...] = ()
    repeats: int = 1
    seed: int = 0
    timeout_s: float = 600.0
    mpiexec: str | None = None
    mpiexec_args: tuple[str, ...] = ()
    concurrent_plain: bool = False  # also N plain loops at once, for each N > 1
    paired: bool = False  # each training process also runs the plain loop, before and after
    # each training process alternates spans of this many framework steps with as many steps
    # of the plain loop (0: off)
    interleave: int = 0

    @property
    def epoch_steps(self) -> int:
        return self.warmup + self.steps + self.warmup

    @property
    def batch(self) -> int:
        return self.batch_size or MODELS[self.model].batch_size

    def command(self, out: Path) -> str:
        """The command line that repeats this measurement, every default spelled out."""
        args = [
            "scaletrain", "bench", "scaling", "--modes", ",".join(self.modes),
            "--np", ",".join(str(n) for n in self.nps), "--model", self.model,
            "--batch-size", str(self.batch), "--steps", str(self.steps),
            "--warmup", str(self.warmup), "--device", self.device,
            "--threads", str(self.threads), "--precision", self.precision,
        ]  # fmt: skip
        if self.device == "cuda" and not self.data_on_device:
            args.append("--data-on-host")
        if self.device == "cuda" and not self.cudnn_benchmark:
            args.append("--no-cudnn-benchmark")
        for item in self.overrides:
            args += ["--set", item]
        if self.repeats > 1:
            args += ["--repeats", str(self.repeats)]
        if self.seed:
            args += ["--seed", str(self.seed)]
        if self.mpiexec:
            args += ["--mpiexec", self.mpiexec]
        if self.mpiexec_args:
            # with "=": launcher arguments start with dashes themselves
            args.append("--mpiexec-args=" + shlex.join(self.mpiexec_args))
        if self.concurrent_plain:
            args.append("--concurrent-plain")
        if self.paired:
            args.append("--paired")
        if self.interleave:
            args += ["--interleave", str(self.interleave)]
        return shlex.join([*args, "--out", str(out)])


def default_threads(device: str, nps: tuple[int, ...]) -> int:
    """One thread per process on CPU (N processes use N cores); on GPUs the host cores
    shared by the largest run's processes."""
    if device == "cpu":
        return 1
    return max(1, (os.cpu_count() or 1) // max(nps))


def base_config(s: Settings, mode: str, run_dir: str, trainers: int) -> dict[str, Any]:
    """The raw config of one run (mode "none" for the 1-process framework and the plain loop):
    one epoch whose data give every training process `epoch_steps` batches."""
    spec = MODELS[s.model]
    raw: dict[str, Any] = {
        "run": {"dir": run_dir, "seed": s.seed, "device": s.device, "precision": s.precision,
                "threads": s.threads},
        "data": {"source": DATA_SOURCE, "val_fraction": 0.0,
                 "args": {"kind": spec.data, "seed": s.seed, **spec.data_args,
                          "device": s.device if s.data_on_device else "cpu"}},
        "model": {"name": s.model, "args": dict(spec.model_args)},
        "task": spec.task,
        "train": {"epochs": 1, "batch_size": s.batch,
                  "progress": False, "keep_last": 1},
        # a first step that compiles (the GPU fast path: minutes) must not count as a lost
        # worker; a process that really hangs meets the run's own timeout
        "parallel": {"mode": mode, "timeout_s": max(60.0, s.timeout_s)},
    }  # fmt: skip
    for section, values in spec.sections.items():
        raw.setdefault(section, {}).update(values)
    for item in s.overrides:
        apply_override(raw, item)
    cfg = from_dict(raw)  # validated here, once, before any process starts
    # every training process gets epoch_steps batches (exactly, without a validation split)
    rows = s.epoch_steps * cfg.train.batch_size * trainers
    if cfg.data.val_fraction > 0:  # +1: the split rounds the validation rows
        rows = math.ceil((rows + 1) / (1.0 - cfg.data.val_fraction))
    raw["data"]["args"]["n"] = rows
    return raw


def layout_of(s: Settings, mode: str, n: int) -> tuple[int, int]:
    """(training processes, server processes) of `mode` on n processes; LayoutError if none."""
    from scaletrain.parallel import make_layout

    if mode == "none":
        return 1, 0
    cfg = from_dict(base_config(s, mode, "unused", 1))
    layout = make_layout(cfg.parallel, n)
    return layout.trainers, layout.servers


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
    """The issue's targets, met or not, with the values they were judged on. All-reduce
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


# ---------------------------------------------------------------------------- the parent


def bench_scaling(
    settings: Settings,
    out_dir: Path,
    *,
    keep_runs: bool = False,
    on_run: Callable[[ScalingRow, int], None] | None = None,
) -> ScalingResult:
    """Run every measurement, write scaling.json, scaling.md and scaling.png into out_dir.

    With repeats, every point runs once per round, round after round, so that a change in
    the machine's load affects all points alike; each point keeps its median run.
    """
    from scaletrain.parallel.world import launched_by_mpi

    s = settings
    if launched_by_mpi():
        raise ConfigError("bench scaling starts its own MPI jobs; run it as one process")
    unknown = [m for m in s.modes if m not in MODES]
    if unknown or not s.modes:
        raise ConfigError(f"--modes {','.join(s.modes)}: choose from {', '.join(MODES)}")
    if not s.nps or min(s.nps) < 1:
        raise ConfigError(f"--np {s.nps}: use positive process counts, e.g. 1,2,3")
    if s.model not in MODELS:
        raise ConfigError(f"--model {s.model!r}: choose from {', '.join(MODELS)}")
    if s.steps < 1 or s.warmup < 1 or s.repeats < 1:
        raise ConfigError("--steps, --warmup and --repeats must be at least 1")
    if s.interleave and (s.paired or not 0 < 2 * s.interleave <= s.steps):
        raise ConfigError(
            f"--interleave {s.interleave}: use a block of at most half of --steps "
            f"({s.steps}), and not together with --paired"
        )
    base_config(s, "none", "check", 1)  # a bad --set fails now, not in a child
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)
    report = on_run or (lambda row, repeat: None)
    at_once = [("plain", n) for n in s.nps if n > 1] if s.concurrent_plain else []
    points = [("plain", 1), ("none", 1), *at_once, *((m, n) for m in s.modes for n in s.nps)]
    runs: dict[tuple[str, int], list[tuple[ScalingRow, dict[str, Any]]]] = {p: [] for p in points}
    load_start = _load_average()
    work = Path(tempfile.mkdtemp(prefix="scaling-", dir=out_dir if keep_runs else None))
    try:
        runner = _Runner(s, out_dir, work)
        for repeat in range(s.repeats):
            for mode, n in points:
                if runs[mode, n] and runs[mode, n][0][0].note.startswith("skipped"):
                    continue
                runs[mode, n].append(runner.run(mode, n, repeat))
                report(runs[mode, n][-1][0], repeat)
    finally:
        if not keep_runs:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    chosen = {p: _median(r) for p, r in runs.items()}
    (plain, device), (framework, _) = chosen["plain", 1], chosen["none", 1]
    rows = [chosen[p][0] for p in points[2:]]
    plain_rate = plain.samples_per_s
    for row in (plain, framework, *rows):
        derive(row, plain_rate)
    derive_concurrent(rows)
    overhead = (
        round(1.0 - framework.samples_per_s / plain_rate, 4) if plain.ok and framework.ok else None
    )
    paired = framework.per_worker_vs_own
    overhead_paired = round(1.0 - paired, 4) if paired is not None else None
    judged = overhead_paired if overhead_paired is not None else overhead
    targets = check_targets(s.device, framework, rows, judged, device.get("gpus"))
    # other jobs on the machine skew every number: the load says how much there was
    settings_out = {**asdict(s), "batch_size": s.batch, "cpu_count": os.cpu_count(),
                    "epoch_steps": s.epoch_steps,
                    "load_average": {"start": load_start, "end": _load_average()}}  # fmt: skip
    overhead_cpu = (
        round(1.0 - plain.cpu_ms_per_step / framework.cpu_ms_per_step, 4)
        if plain.cpu_ms_per_step and framework.cpu_ms_per_step
        else None
    )
    result = ScalingResult(
        settings_out, device, plain, framework, rows, overhead, targets, s.command(out_dir),
        overhead_cpu, overhead_paired,
    )  # fmt: skip
    write_outputs(result, out_dir)
    return result


def _load_average() -> float | None:
    """The 1-minute load average (None where the system does not say)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _median(
    runs: list[tuple[ScalingRow, dict[str, Any]]],
) -> tuple[ScalingRow, dict[str, Any]]:
    """The run with the median samples/s (the lower middle one of an even count); measured
    against their own plain loops (--paired), the run with the median of that ratio."""
    good = [r for r in runs if r[0].ok]
    if not good:
        return runs[-1]
    paired = all(r[0].per_worker_vs_own is not None for r in good)
    key = "per_worker_vs_own" if paired else "samples_per_s"
    row, device = sorted(good, key=lambda r: getattr(r[0], key))[(len(good) - 1) // 2]
    row.repeats_samples_per_s = [r[0].samples_per_s for r in good]
    if paired:
        row.repeats_vs_own = [r[0].per_worker_vs_own for r in good]
    return row, device


class _Runner:
    """Starts the plain loop, the 1-process framework and the MPI jobs; reads their records."""

    def __init__(self, s: Settings, out_dir: Path, work: Path) -> None:
        self.s, self.out_dir, self.work = s, out_dir, work

    def run(self, mode: str, n: int, repeat: int) -> tuple[ScalingRow, dict[str, Any]]:
        """One run of one point (a skipped row where the mode cannot use n processes)."""
        if mode == "plain":  # n independent loops
            return self._once(mode, n, n, 0, repeat)
        try:
            trainers, servers = layout_of(self.s, mode, n)
        except ConfigError as exc:  # e.g. a parameter server on 1 process
            why = (
                "needs 1 master + at least 1 worker"
                if mode in PS_MODES and n < 2
                else str(exc).splitlines()[0].rstrip(":")
            )
            return ScalingRow(mode, n, 0, note=f"skipped: {why}"), {}
        return self._once(mode, n, trainers, servers, repeat)

    def _once(
        self, mode: str, n: int, trainers: int, servers: int, repeat: int
    ) -> tuple[ScalingRow, dict[str, Any]]:
        s = self.s
        name = f"{mode}-np{n}" + (f"-r{repeat}" if s.repeats > 1 else "")
        run_dir = self.work / name
        out = self.work / f"{name}.json"
        plain = mode == "plain"  # each of its loops reads data of its own
        raw = base_config(s, "none" if plain else mode, str(run_dir), 1 if plain else trainers)
        spec = {"kind": "plain" if mode == "plain" else "framework", "config": raw,
                "warmup": s.warmup, "steps": s.steps, "cudnn_benchmark": s.cudnn_benchmark,
                "paired": s.paired and not plain, "interleave": 0 if plain else s.interleave,
                "out": str(out)}  # fmt: skip
        spec_path = self.work / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        command = self._command(mode, n, spec_path)
        row = ScalingRow(mode, n, trainers, servers)
        log = self.out_dir / "logs" / f"{name}.log"
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=s.timeout_s, env=self._env()
            )
            text, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            text = _text(exc.stdout) + _text(exc.stderr) + f"\ntimed out after {s.timeout_s:g} s"
            code = -1
        row.seconds = round(time.perf_counter() - start, 2)
        log.write_text(shlex.join(command) + "\n" + text)
        if code != 0 or not out.exists():
            tail = [line for line in text.strip().splitlines() if line.strip()][-1:] or ["?"]
            row.note = f"failed (exit {code}): {tail[0][:300]} (log: {log})"
            return row, {}
        record = json.loads(out.read_text())
        _fill(row, record)
        return row, record.get("device", {})

    def _command(self, mode: str, n: int, spec: Path) -> list[str]:
        from scaletrain.parallel.launch import relaunch_command

        argv = ["bench", "scaling-rank", str(spec)]
        if n == 1 and mode in ("plain", "none"):  # no launcher: what `scaletrain train` runs
            return [sys.executable, "-m", "scaletrain", *argv]
        command = relaunch_command(n, argv)
        if self.s.mpiexec:
            command[0] = self.s.mpiexec
        return [command[0], *self.s.mpiexec_args, *command[1:]]

    def _env(self) -> dict[str, str]:
        # drop what a surrounding launcher set for its own ranks, keep the site's MPI
        # settings (Open MPI reads OMPI_MCA_*, e.g. how it starts processes on this machine)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_LAUNCHER_PREFIXES) or k.startswith(_MPI_SETTINGS)
        }
        threads = str(self.s.threads)
        return {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                "PYTHONUNBUFFERED": "1"}  # fmt: skip


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _fill(row: ScalingRow, record: dict[str, Any]) -> None:
    """Aggregate the per-rank records of one run into its row."""
    ranks = record["ranks"]
    trainers = [r for r in ranks if r["trains"]]
    rates = [r["samples_per_s"] for r in trainers]
    row.worker_samples_per_s = [round(v, 2) for v in rates]
    row.task = trainers[0].get("task", "")
    row.samples_per_s = round(sum(rates), 2)
    row.per_worker_samples_per_s = round(sum(rates) / len(rates), 2)
    row.ms_per_step = round(statistics.fmean(r["ms_per_step"] for r in trainers), 3)
    row.cpu_ms_per_step = round(statistics.fmean(r["cpu_ms_per_step"] for r in trainers), 3)
    own = [r.get("own_plain_samples_per_s") for r in trainers]
    if all(own):  # --paired
        row.own_plain_samples_per_s = [[round(v, 2) for v in pair] for pair in own]
        ratios = [rate / statistics.fmean(pair) for rate, pair in zip(rates, own, strict=True)]
        row.per_worker_vs_own = round(statistics.fmean(ratios), 4)
    spent = [r["exchange_share"] for r in trainers if r.get("exchange_share") is not None]
    row.worker_exchange = round(statistics.fmean(spent), 4) if spent else None
    servers = [r for r in ranks if not r["trains"] and r.get("ps_updates")]
    if servers:
        updates = sum(r["ps_updates"] for r in servers)
        row.ps_updates = int(updates)
        row.staleness_mean = round(
            sum(r["staleness_mean"] * r["ps_updates"] for r in servers) / updates, 3
        )
        row.staleness_max = max(r["staleness_max"] for r in servers)
        busy = [r["master_busy"] for r in servers if r.get("master_busy") is not None]
        row.master_busy = round(statistics.fmean(busy), 4) if busy else None


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


# ---------------------------------------------------------------------------- the ranks


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class StepTimer:
    """The trainer's step_callback (and the plain loop's): times steps `warmup` + 1 to
    `warmup + steps`, in wall time, in this process's CPU time (all its threads) and, for a
    parameter-server worker, in its training thread's seconds on exchanges (`spent`).

    With `block` (--interleave), the window is cut into spans of `block` steps and `between`
    runs after each span but the last, outside the time counted (the plain loop's blocks)."""

    def __init__(
        self,
        warmup: int,
        steps: int,
        device: torch.device | None = None,
        spent: Callable[[], float] | None = None,
        block: int = 0,
        between: Callable[[], None] | None = None,
    ) -> None:
        self.first, self.last = warmup, warmup + steps
        self.device = device or torch.device("cpu")
        self.spent = spent
        self.block, self.between = block, between
        self.total = (0.0, 0.0, 0.0)  # wall, CPU, exchange seconds of the closed spans
        self.opened: tuple[float, float, float] | None = None  # the span being timed
        self.done = False

    def _stamp(self) -> tuple[float, float, float]:
        _sync(self.device)  # what the GPU still has queued belongs to the steps before
        spent = self.spent() if self.spent is not None else 0.0
        return time.perf_counter(), time.process_time(), spent

    def __call__(self, step: int) -> None:
        if step < self.first or step > self.last:
            return
        edge = step in (self.first, self.last) or (
            self.block and (step - self.first) % self.block == 0
        )
        if not edge:
            return
        if self.opened is not None:
            (w0, c0, s0), (w1, c1, s1), (w, c, x) = self.opened, self._stamp(), self.total
            self.total = (w + w1 - w0, c + c1 - c0, x + s1 - s0)
            self.opened = None
        if step == self.last:
            self.done = True
            return
        if self.between is not None and step > self.first:
            self.between()
        self.opened = self._stamp()

    def record(self, samples_per_step: int) -> dict[str, float]:
        """Rates over the window. CPU time per step hardly depends on other jobs sharing the
        cores (wall time does), so it compares 1-process runs on a busy machine."""
        if not self.done:
            raise TrainingError(
                f"the run ended before step {self.last}: the timed window was not reached"
            )
        steps = self.last - self.first
        seconds, cpu, spent = self.total
        out = {
            "window_s": seconds,
            "samples_per_s": steps * samples_per_step / seconds,
            "ms_per_step": 1e3 * seconds / steps,
            "cpu_ms_per_step": 1e3 * cpu / steps,
        }
        if self.spent is not None:
            out["exchange_share"] = spent / seconds
        return out


def run_rank(spec_path: Path) -> None:
    """One process of a measurement (`scaletrain bench scaling-rank SPEC`); rank 0 (or the
    only process) writes the record to the spec's `out`."""
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("cudnn_benchmark") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # the same choice for plain loop and framework
    if spec["kind"] == "plain":
        _plain_rank(spec)
        return
    from scaletrain.parallel.world import World

    world = World.detect()
    try:
        mine = _framework_rank(spec, world)
        ranks = world.comm.gather(mine, root=0) if world.comm is not None else [mine]
    except Exception as exc:
        if world.size == 1:
            raise
        # the other ranks would wait for this one: report, then stop the whole job
        detail = str(exc) if isinstance(exc, ScaletrainError) else traceback.format_exc()
        print(f"error: rank {world.rank}: {detail}", file=sys.stderr, flush=True)
        world.abort(2)
        raise
    if world.rank == 0:
        device = ranks[0].pop("device_info")
        for r in ranks[1:]:
            r.pop("device_info", None)
        Path(spec["out"]).write_text(json.dumps({"ranks": ranks, "device": device}))


def _plain_rank(spec: dict[str, Any]) -> None:
    """The plain loop; under a launcher (--concurrent-plain) N of them, started together after
    a barrier so that their timed windows overlap, and no other communication."""
    from scaletrain.parallel.world import launched_by_mpi

    comm = None
    if launched_by_mpi():
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if torch.cuda.is_available():  # one GPU per loop, by node-local rank
            local = comm.Split_type(MPI.COMM_TYPE_SHARED).rank
            torch.cuda.set_device(local % torch.cuda.device_count())
    mine = plain_loop(spec, ready=comm.Barrier if comm is not None else None)
    if comm is not None:
        mine["rank"] = comm.rank
    ranks = comm.gather(mine, root=0) if comm is not None else [mine]
    if ranks is None:  # not rank 0
        return
    device = ranks[0].pop("device_info")
    for r in ranks[1:]:
        r.pop("device_info", None)
    if torch.cuda.is_available():
        device["gpus"] = torch.cuda.device_count()
    Path(spec["out"]).write_text(json.dumps({"ranks": ranks, "device": device}))


def _framework_rank(spec: dict[str, Any], world: Any) -> dict[str, Any]:
    from scaletrain.bench.gpu import device_info
    from scaletrain.parallel import make_strategy
    from scaletrain.train.stopping import StopSignals
    from scaletrain.train.trainer import Trainer

    cfg = from_dict(spec["config"])
    strategy = make_strategy(cfg.parallel, world)
    spent = getattr(strategy, "exchange_seconds", None)  # a parameter-server worker's
    own: list[float] = []
    blocks = _plain_blocks(spec, world, trains=not strategy.serves)
    timer = StepTimer(spec["warmup"], spec["steps"], spent=spent,
                      block=spec.get("interleave", 0), between=blocks)  # fmt: skip

    def own_plain() -> None:  # --paired: the plain loop in this process, all at once
        if strategy.serves:
            world.meet()
        else:
            world.device(cfg.run.device)  # this process's GPU, as the trainer will choose it
            own.append(plain_loop(spec, ready=world.meet)["samples_per_s"])
        world.meet()

    try:
        if spec.get("paired"):
            own_plain()
        # the stop vote of `scaletrain train` (no handlers: a signal ends a benchmark at once)
        stop = StopSignals(cfg.train.stop_signals) if cfg.train.stop_signals else None
        trainer = Trainer(cfg, strategy=strategy, overwrite=True, step_callback=timer, stop=stop)
        timer.device = trainer.device  # chosen by the strategy (the node-local GPU)
        result = trainer.serve() if strategy.serves else trainer.fit()
    finally:
        strategy.close()
    if spec.get("paired"):
        own_plain()
    if blocks is not None:
        own.append(blocks.samples_per_s())
    record: dict[str, Any] = {"rank": world.rank, "trains": not strategy.serves,
                              "device": str(trainer.device), "steps_run": result.steps,
                              "task": type(trainer.task).__name__,
                              "device_info": device_info(trainer.device)}  # fmt: skip
    if strategy.serves:
        m = result.metrics
        record.update(
            staleness_mean=m.get("ps/staleness_mean", 0.0),
            staleness_max=m.get("ps/staleness_max", 0.0),
            ps_updates=m.get("ps/updates", 0.0),
            master_busy=m.get("ps/master_busy"),
        )
    else:
        record.update(timer.record(cfg.train.batch_size))
        if own:
            record["own_plain_samples_per_s"] = own
    return record


def _plain_blocks(spec: dict[str, Any], world: Any, trains: bool) -> PlainBlocks | None:
    """--interleave: this training process's plain loop, in blocks between the framework's
    spans, the training processes meeting around each block (servers take no part)."""
    block = spec.get("interleave", 0)
    if not block:
        return None
    comm = None
    if world.comm is not None:  # every process takes part in the split
        from mpi4py import MPI

        comm = world.comm.Split(0 if trains else MPI.UNDEFINED, world.rank)
    if not trains:
        return None
    from scaletrain.parallel.world import meet

    world.device(from_dict(spec["config"]).run.device)  # the GPU the trainer will choose
    return PlainBlocks(spec, block, (lambda: meet(comm)) if comm is not None else lambda: None)


# ---------------------------------------------------------------------------- the plain loop


class PlainLoop:
    """The reference: the same model, optimizer, data, batch, precision and device, trained by
    a hand-written loop. Only the model builder and the optimizer's construction come from
    the project (they run once, here); every per-step line is plain PyTorch."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from scaletrain.models.registry import build_models
        from scaletrain.tasks.base import make_optimizer

        cfg = from_dict(spec["config"])
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = dev = torch.device("cuda" if cfg.run.device == "cuda" else "cpu")
        self.data = synthetic_data(**cfg.data.args)
        torch.manual_seed(cfg.run.seed)
        models = {k: m.to(dev) for k, m in build_models(cfg.model.name, cfg.model.args).items()}
        optimizers = {k: make_optimizer(cfg.optim, m.parameters()) for k, m in models.items()}
        autocast: AbstractContextManager = (
            torch.autocast(dev.type, dtype=torch.bfloat16)
            if cfg.run.precision == "bf16"
            else nullcontext()
        )
        if cfg.task == "gan":
            self.step, self.path = _gan_step(cfg, models, optimizers, autocast, dev)
        else:
            model, optimizer = models["model"], optimizers["model"]
            self.step, self.path = _supervised_step(model, optimizer, autocast), "eager"
        for m in models.values():
            m.train()
        self.batch_size = cfg.train.batch_size
        self.order = torch.randperm(next(iter(self.data.values())).shape[0])
        self.batches = max(1, self.order.numel() // self.batch_size)
        self.done = 0  # steps so far; the data are walked round and round

    def run(self, steps: int) -> None:
        b = self.batch_size
        for _ in range(steps):
            i = self.done % self.batches
            idx = self.order[i * b : (i + 1) * b]
            self.step({k: v[idx].to(self.device, non_blocking=True) for k, v in self.data.items()})
            self.done += 1


def plain_loop(spec: dict[str, Any], ready: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The plain loop's timed run: `warmup` steps, then `steps` timed ones. `ready` is called
    once everything is built, just before the first step."""
    from scaletrain.bench.gpu import device_info

    loop = PlainLoop(spec)
    warmup, steps = spec["warmup"], spec["steps"]
    timer = StepTimer(warmup, steps, loop.device)
    if ready is not None:
        ready()
    for i in range(warmup + steps):
        loop.run(1)
        timer(i + 1)
    return {"rank": 0, "trains": True, "device": str(loop.device),
            "task": f"plain loop, {loop.path}", **timer.record(loop.batch_size),
            "device_info": device_info(loop.device)}  # fmt: skip


class PlainBlocks:
    """--interleave: the plain loop in blocks of `block` steps between the framework's spans
    (a StepTimer's `between`), in the same process, every training process at once (`meet`
    before and after each block); the first call also runs the loop's `warmup` steps."""

    def __init__(
        self, spec: dict[str, Any], block: int, meet: Callable[[], None] = lambda: None
    ) -> None:
        self.loop = PlainLoop(spec)
        self.block, self.warmup, self.meet = block, spec["warmup"], meet
        self.seconds, self.steps = 0.0, 0

    def __call__(self) -> None:
        self.meet()
        if self.steps == 0:
            self.loop.run(self.warmup)
            _sync(self.loop.device)
        start = time.perf_counter()
        self.loop.run(self.block)
        _sync(self.loop.device)
        self.seconds += time.perf_counter() - start
        self.steps += self.block
        self.meet()

    def samples_per_s(self) -> float:
        return self.steps * self.loop.batch_size / self.seconds


def _supervised_step(model, optimizer, autocast) -> Callable[[dict[str, torch.Tensor]], None]:
    def step(batch: dict[str, torch.Tensor]) -> None:
        x = batch["x"] if "x" in batch else batch["ECAL"].unsqueeze(1)
        with autocast:
            out = model(x)
        logits = out["logits"] if isinstance(out, dict) else out
        loss = F.cross_entropy(logits.float(), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _gan_step(cfg: Config, models, optimizers, autocast, dev: torch.device):
    """The 3DGAN step by hand: D `discriminator_steps` times, then G `generator_steps` times.

    Its losses are those of the trainer's path for this config: on the fast path
    (gan.fast_path, on by default for the 3DGAN on a GPU) the same FastGanLosses, compiled
    alike, since they are the model's computation; otherwise tasks/gan.py's written out here.
    """
    from scaletrain.tasks.fast_gan import FastGanLosses, use_fast_path

    g, d = models["generator"], models["discriminator"]
    opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
    gan = cfg.gan
    if use_fast_path(gan, models, dev):
        compile = gan.compile and dev.type == "cuda"
        fast = FastGanLosses(g, d, gan, autocast, compile=compile)
        d_loss, g_loss = fast.d_loss, fast.g_loss
        path = "FastGanLosses" + (", compiled" if compile else "")
    else:
        d_loss, g_loss = _eager_gan_losses(gan, g, d, autocast, dev)
        path = "eager 3DGAN losses"

    def step(batch: dict[str, torch.Tensor]) -> None:
        real, energy = batch["ECAL"].unsqueeze(1), batch["energy"]
        if gan.image_scale != 1.0:
            real = real * gan.image_scale
        for _ in range(gan.discriminator_steps):
            loss = d_loss(real, energy)[0]
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        d.requires_grad_(False)
        for _ in range(gan.generator_steps):
            loss = g_loss(real.shape[0])[0]
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
        d.requires_grad_(True)

    return step, path


def _eager_gan_losses(gan: Any, g, d, autocast, dev: torch.device):
    """tasks/gan.py's losses in plain PyTorch: d_loss(real, energy), g_loss(n), each a
    stacked (total, bce, mape) tensor."""
    w_bce, w_ep, w_ecal = gan.loss_weights
    lo, hi = gan.gen_energy_range

    def mape(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 100.0 * ((pred - target).abs() / target.abs().clamp_min(1e-7)).mean()

    def energies(n: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, device=dev)

    def latent(energy: torch.Tensor) -> torch.Tensor:
        z = torch.randn(energy.shape[0], gan.latent_size, device=dev)
        return z * (energy * gan.energy_scale).unsqueeze(1)

    def labels(value: float, n: int) -> torch.Tensor:
        y = torch.full((n,), value, device=dev)
        return torch.where(torch.rand(n, device=dev) < gan.label_flip, 1.0 - y, y)

    def d_loss(real: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        n = real.shape[0]
        fake_energy = energies(n)
        with torch.no_grad(), autocast:
            fake = g(latent(fake_energy))
        with autocast:
            real_logit, real_ep = d(real)
            fake_logit, fake_ep = d(fake)
        bce = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logit.float(), labels(1.0, n))
            + F.binary_cross_entropy_with_logits(fake_logit.float(), labels(0.0, n))
        )
        ep = 0.5 * (
            mape(real_ep.float(), energy * gan.energy_scale)
            + mape(fake_ep.float(), fake_energy * gan.energy_scale)
        )
        return torch.stack([w_bce * bce + w_ep * ep, bce, ep])

    def g_loss(n: int) -> torch.Tensor:
        e = energies(n)
        with autocast:
            fake = g(latent(e))
            logit, ep_pred = d(fake)
        bce = F.binary_cross_entropy_with_logits(logit.float(), torch.ones_like(e))
        ep = mape(ep_pred.float(), e * gan.energy_scale)
        deposit = gan.sampling_fraction * e * gan.image_scale
        ecal = mape(fake.float().sum(dim=(1, 2, 3, 4)), deposit)
        return torch.stack([w_bce * bce + w_ep * ep + w_ecal * ecal, bce, ecal])

    return d_loss, g_loss
