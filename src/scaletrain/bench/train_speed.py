"""`bench train`: training samples/s of the fast step against the plain eager fp32 loop.

The baseline is the project's GanTask step (tasks/gan.py) on the published models in fp32,
driven by a plain loop: batches taken from host memory and copied to the device each step,
backward and optimizer step per update. The fast path is bench/fast_train.FastGanStep. Both
start from the same weights; "samples" are real showers consumed (the batch size per step,
as the trainer counts them). The timed data are synthetic shower-like images made on the
device (throughput does not depend on their values); the loss and fidelity check trains on
showers of the project's simulator.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from scaletrain.bench.flops import discriminator_flops, generator_flops, train_flops_per_sample
from scaletrain.bench.gpu import device_info, peak_memory_gib, reset_peak_memory, resolve_device
from scaletrain.config import GanConfig, OptimConfig
from scaletrain.models.threedgan import build_3dgan


@dataclass
class TrainRow:
    path: str
    precision: str
    batch_size: int
    samples_per_s: float
    ms_per_step: float
    peak_memory_gib: float
    model_tflops: float  # at the published model's FLOPs per training sample
    speedup: float = 1.0


@dataclass
class TrainBenchResult:
    device: dict
    model_gflop_per_sample: float
    rows: list[TrainRow]
    loss_check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def synthetic_showers(n: int, device: torch.device, seed: int = 0):
    """Shower-like images (B, 25, 25, 25) in GeV and primary energies: a longitudinal gamma
    profile times a Gaussian core, 2 % sampling fraction, log-normal cell noise."""
    rng = torch.Generator(device=device)
    rng.manual_seed(seed)
    energy = 10 + 490 * torch.rand(n, device=device, generator=rng)
    z = torch.arange(25, device=device, dtype=torch.float32) + 0.5
    long = z**2 * torch.exp(-z / 3.0)
    r = torch.arange(25, device=device, dtype=torch.float32) - 12
    core = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 4.0)
    shape = core[:, :, None] * long[None, None, :]
    shape = shape / shape.sum()
    noise = torch.exp(0.5 * torch.randn(n, 25, 25, 25, device=device, generator=rng))
    images = shape * noise
    images = images / images.sum(dim=(1, 2, 3), keepdim=True)
    return images * (0.02 * energy)[:, None, None, None], energy


def _models(device: torch.device, seed: int, model_args: dict | None = None):
    torch.manual_seed(seed)
    return {k: m.to(device) for k, m in build_3dgan(**(model_args or {})).items()}


def _baseline(models, cfg: GanConfig, optim: OptimConfig, device: torch.device):
    """The project's eager fp32 step, driven by a plain loop over host batches."""
    from scaletrain.tasks.gan import GanTask

    task = GanTask(cfg, optim, models, device)

    def update(name: str, loss: torch.Tensor) -> None:
        opt = task.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step(images: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        out = task.train_step({"ECAL": images, "energy": energy}, update)
        names = ("d_loss", "d_bce", "d_energy_mape", "g_loss", "g_bce", "g_ecal_mape")
        return torch.stack([out[k] for k in names])

    return step


def _fast(models, cfg, optim, precision: str, compile: bool):
    from scaletrain.bench.fast_train import FastGanStep

    fast = FastGanStep(
        models["generator"], models["discriminator"], cfg, optim,
        precision=precision, compile=compile,
    )  # fmt: skip
    return lambda images, energy: fast.step(images.unsqueeze(1), energy)


def _run(step, images, energy, batch: int, steps: int, dev: torch.device, seed: int, first=0):
    """`steps` steps over shuffled batches from step `first` on; returns (seconds, per-step
    losses on the host).

    Images on the host are copied batch by batch (the plain loop); on `dev` they are gathered.
    """
    n = images.shape[0]
    gen = torch.Generator(device=images.device)
    gen.manual_seed(seed)
    losses = []
    order = torch.randperm(n, device=images.device, generator=gen)
    _sync(dev)
    start = time.perf_counter()
    for i in range(first, first + steps):
        lo = (i * batch) % max(n - batch + 1, 1)
        idx = order[lo : lo + batch]
        x, e = images[idx], energy[idx]
        if x.device != dev:  # what a plain loop does: host batch -> device
            x, e = x.to(dev, non_blocking=True), e.to(dev, non_blocking=True)
        losses.append(step(x, e))
    _sync(dev)
    seconds = time.perf_counter() - start
    return seconds, (torch.stack(losses).float().cpu() if losses else torch.empty(0, 6))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_training(
    batch_sizes: tuple[int, ...] = (1024,),
    *,
    baseline_batch_size: int = 128,
    iters: int = 10,
    warmup: int = 3,
    device: str = "auto",
    precision: str = "bf16",
    compile: bool | None = None,
    n_data: int | None = None,
    loss_check_steps: int = 0,
    loss_check_batch: int = 128,
    loss_check_fidelity: int = 2000,
    seed: int = 0,
    model_args: dict | None = None,
    on_row=None,
) -> TrainBenchResult:
    """Time the eager baseline and the fast step; optionally compare short training runs."""
    dev = resolve_device(device)
    if compile is None:
        compile = dev.type == "cuda"
    cfg, optim = GanConfig(latent_size=(model_args or {}).get("latent_size", 200)), OptimConfig()
    init = _models(torch.device("cpu"), seed, model_args)
    flops = train_flops_per_sample(
        generator_flops(init["generator"]), discriminator_flops(init["discriminator"])
    )
    n_data = n_data or max(*batch_sizes, baseline_batch_size) * 4
    images, energy = synthetic_showers(n_data, dev, seed)
    host_images, host_energy = images.cpu(), energy.cpu()
    if dev.type == "cuda":
        host_images, host_energy = host_images.pin_memory(), host_energy.pin_memory()

    rows = []
    reset_peak_memory(dev)
    base = _baseline(_to(init, dev), cfg, optim, dev)
    _run(base, host_images, host_energy, baseline_batch_size, warmup, dev, seed)
    sec, _ = _run(base, host_images, host_energy, baseline_batch_size, iters, dev, seed)
    rows.append(_row("eager-fp32", "fp32", baseline_batch_size, sec / iters, dev, flops))
    report = on_row or (lambda rows: None)  # partial results survive a later failure
    report(rows)

    for b in batch_sizes:
        reset_peak_memory(dev)
        fast = _fast(_to(init, dev), cfg, optim, precision, compile)
        _run(fast, images, energy, b, warmup, dev, seed)
        sec, _ = _run(fast, images, energy, b, iters, dev, seed)
        row = _row("fast", precision, b, sec / iters, dev, flops)
        row.speedup = round(row.samples_per_s / rows[0].samples_per_s, 2)
        rows.append(row)
        report(rows)

    check = {}
    if loss_check_steps:
        check = loss_check(
            init, cfg, optim, dev, loss_check_steps, loss_check_batch, precision, compile,
            seed, loss_check_fidelity,
        )  # fmt: skip
    return TrainBenchResult(device_info(dev), round(flops / 1e9, 3), rows, check)


def _to(models, dev):
    return {k: copy.deepcopy(m).to(dev) for k, m in models.items()}


def _row(path, precision, batch, sec, dev, flops) -> TrainRow:
    rate = batch / sec
    return TrainRow(
        path=path,
        precision=precision,
        batch_size=batch,
        samples_per_s=round(rate, 1),
        ms_per_step=round(1e3 * sec, 2),
        peak_memory_gib=peak_memory_gib(dev),
        model_tflops=round(rate * flops / 1e12, 2),
    )


def loss_check(
    init, cfg, optim, dev, steps: int, batch: int, precision: str, compile: bool, seed: int,
    fidelity_showers: int = 0, fidelity_points: int = 4,
) -> dict:  # fmt: skip
    """Train both paths from the same weights on the same batches of simulated showers;
    compare their losses and, with fidelity_showers, the physics fidelity of what each
    generator produces at `fidelity_points` steps spread over the second half of the run.

    Random draws (latents, label flips, dropout) differ between the paths, so the losses
    agree statistically, not step by step: compare means over the last half of the run.
    Fidelity jumps from step to step of a GAN, hence several points and their median.
    """
    from scaletrain.bench.fast_train import LOSS_NAMES

    data = _simulated(min(steps * batch, 16384), seed)
    host_images, host_energy = torch.from_numpy(data["ECAL"]), torch.from_numpy(data["energy"])
    images, energy = host_images.to(dev), host_energy.to(dev)
    base_models, fast_models = _to(init, dev), _to(init, dev)
    paths = {
        "eager": (base_models, _baseline(base_models, cfg, optim, dev), host_images, host_energy),
        "fast": (fast_models, _fast(fast_models, cfg, optim, precision, compile), images, energy),
    }
    half = steps // 2
    points = range(1, fidelity_points + 1)
    reference = _reference(fidelity_showers, seed + 1) if fidelity_showers else None
    marks = (
        sorted({half - (-(steps - half) * k // fidelity_points) for k in points})  # ceil
        if reference is not None
        else [steps]
    )
    losses, fidelity = {}, {}
    for name, (models, step, x, e) in paths.items():
        done, parts, scores = 0, [], []
        for mark in marks:
            parts.append(_run(step, x, e, batch, mark - done, dev, seed, first=done)[1])
            done = mark
            if reference is not None:
                scores.append(_fidelity(models, reference, cfg, optim, dev, seed))
        losses[name], fidelity[name] = torch.cat(parts), scores
    lb, lf = losses["eager"], losses["fast"]
    out = {"steps": steps, "batch_size": batch, "data": "simulated showers", "losses": {}}
    for i, name in enumerate(LOSS_NAMES):
        b_first, f_first = float(lb[0, i]), float(lf[0, i])
        b_last, f_last = float(lb[half:, i].mean()), float(lf[half:, i].mean())
        spread = float(torch.cat([lb[half:, i], lf[half:, i]]).std())
        out["losses"][name] = {
            "eager_first": b_first, "fast_first": f_first,
            "eager_last_half_mean": b_last, "fast_last_half_mean": f_last,
            "rel_diff": (f_last - b_last) / max(abs(b_last), 1e-12),
            "step_std": spread,
        }  # fmt: skip
    out["eager_curve"] = lb[:, [0, 3]].tolist()
    out["fast_curve"] = lf[:, [0, 3]].tolist()
    if reference is not None:
        out["fidelity_steps"] = marks
        out["fidelity_curve"] = fidelity
        out["fidelity"] = {name: float(np.median(v)) for name, v in fidelity.items()}
    return out


def _simulated(n: int, seed: int) -> dict:
    """n electron showers of the project's simulator, 10-500 GeV, in host memory."""
    from scaletrain.data.simulator import simulate_showers

    return simulate_showers(n, (10.0, 500.0), seed=seed, workers=min(os.cpu_count() or 1, 16))


def _reference(n: int, seed: int) -> dict:
    from scaletrain.calo.binning import quantile_edges

    showers = _simulated(n, seed)
    return {"showers": showers, "edges": quantile_edges(showers["energy"])}


def _fidelity(models, reference: dict, cfg, optim, dev, seed: int) -> float:
    """Fidelity (lower is better) of a generator against held-out simulated showers. Every
    path generates the same way (fp32 eager, the same latents): only their training differs."""
    from scaletrain.calo import fidelity_score
    from scaletrain.generate import generate_like
    from scaletrain.tasks.gan import GanTask

    showers = reference["showers"]
    generated = generate_like(GanTask(cfg, optim, models, dev), showers, seed=seed)
    return float(fidelity_score(generated, showers, energy_bins=reference["edges"]))
