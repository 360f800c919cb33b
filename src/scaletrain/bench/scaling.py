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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from scaletrain.bench.scaling_results import (
    MODES,
    PS_MODES,
    ScalingResult,
    ScalingRow,
    check_targets,
    derive,
    derive_concurrent,
    write_outputs,
)
from scaletrain.config import apply_override, from_dict
from scaletrain.errors import ConfigError

DATA_SOURCE = "scaletrain.bench.scaling:synthetic_data"

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
