"""`bench gen`: showers/s of the fast generation path against the plain eager fp32 baseline.

Both paths run in the same process on the same weights: the baseline is the published
generator as written in models/threedgan.py, called batch by batch in fp32 under no_grad
(what a user writes by hand); the fast path is scaletrain.fastpath.FastGenerate. Showers
stay on the device (the rate of the generator itself; writing HDF5 is a separate cost).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from scaletrain.bench.flops import generator_flops
from scaletrain.bench.gpu import device_info, peak_memory_gib, reset_peak_memory, resolve_device
from scaletrain.models.threedgan import Generator


@dataclass
class GenRow:
    path: str
    precision: str
    batch_size: int
    showers_per_s: float
    ms_per_batch: float
    peak_memory_gib: float
    model_tflops: float  # at the published model's FLOPs per shower
    executed_tflops: float  # at the FLOPs this path actually executes
    speedup: float = 1.0


@dataclass
class GenBenchResult:
    device: dict
    model_gflop_per_shower: float
    fast_gflop_per_shower: float
    rows: list[GenRow]
    check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _latents(n: int, latent: int, device: torch.device, seed: int) -> torch.Tensor:
    rng = torch.Generator(device=device)
    rng.manual_seed(seed)
    energy = 10 + 490 * torch.rand(n, device=device, generator=rng)
    z = torch.randn(n, latent, device=device, generator=rng)
    return z * (energy * 0.01).unsqueeze(1), energy


def _time(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, iters: int, warmup: int):
    """Seconds per call: fresh latent draws each call, synchronized around the timed loop."""
    scale = z.norm(dim=1, keepdim=True)
    with torch.no_grad():
        for _ in range(warmup):
            fn(torch.randn_like(z) * scale)
        _sync(z.device)
        start = time.perf_counter()
        for _ in range(iters):
            fn(torch.randn_like(z) * scale)
        _sync(z.device)
    return (time.perf_counter() - start) / max(iters, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_generation(
    batch_sizes: tuple[int, ...] = (8192,),
    *,
    baseline_batch_size: int | None = None,
    iters: int = 20,
    warmup: int = 3,
    device: str = "auto",
    precision: str = "bf16",
    compile: bool | None = None,
    cuda_graph: bool = True,
    generator: Generator | None = None,
    check_n: int = 512,
    physics_n: int = 0,
    seed: int = 0,
) -> GenBenchResult:
    """Time baseline and fast path; check that the fast showers equal the eager ones."""
    from scaletrain.fastpath import FastGenerate

    dev = resolve_device(device)
    if compile is None:
        compile = dev.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    torch.manual_seed(seed)
    g = (copy.deepcopy(generator) if generator is not None else Generator()).to(dev).eval()
    model_flops = generator_flops(g)
    rows: list[GenRow] = []

    base_b = baseline_batch_size or batch_sizes[0]
    reset_peak_memory(dev)
    z, _ = _latents(base_b, g.latent_size, dev, seed)
    sec = _time(g, z, iters, warmup)
    rows.append(_row("eager-fp32", "fp32", base_b, sec, dev, model_flops, model_flops))
    base_rate = rows[0].showers_per_s

    fast_flops = 0
    for b in batch_sizes:
        reset_peak_memory(dev)
        fast = FastGenerate(g, b, dtype=dtype, compile=compile, cuda_graph=cuda_graph)
        fast_flops = _fast_flops(g, dtype)
        z, _ = _latents(b, g.latent_size, dev, seed)
        sec = _time(fast, z, iters, warmup)
        row = _row("fast", precision, b, sec, dev, model_flops, fast_flops)
        row.speedup = round(row.showers_per_s / base_rate, 2)
        rows.append(row)

    check = check_equal(g, fast, check_n, seed + 1, physics_n)
    return GenBenchResult(
        device=device_info(dev),
        model_gflop_per_shower=round(model_flops / 1e9, 4),
        fast_gflop_per_shower=round(fast_flops / 1e9, 4),
        rows=rows,
        check=check,
    )


def _fast_flops(g: Generator, dtype: torch.dtype) -> int:
    from scaletrain.bench.flops import forward_flops
    from scaletrain.models.fast_generator import FastGenerator

    ref = next(g.parameters())
    model = FastGenerator(g, frozen=True, dtype=dtype)
    return forward_flops(model, torch.zeros(1, g.latent_size, device=ref.device))


def _row(path, precision, batch, sec, dev, model_flops, flops) -> GenRow:
    rate = batch / sec
    return GenRow(
        path=path,
        precision=precision,
        batch_size=batch,
        showers_per_s=round(rate, 1),
        ms_per_batch=round(1e3 * sec, 3),
        peak_memory_gib=peak_memory_gib(dev),
        model_tflops=round(rate * model_flops / 1e12, 2),
        executed_tflops=round(rate * flops / 1e12, 2),
    )


def check_equal(
    g: Generator, fast: Callable[[torch.Tensor], torch.Tensor], n: int, seed: int, physics_n: int
) -> dict:
    """Fast vs eager fp32 on the same latent vectors; optionally physics scores of both."""
    dev = next(g.parameters()).device
    batch = getattr(fast, "batch_size", n)
    n = min(n, batch)
    z, _ = _latents(n, g.latent_size, dev, seed)
    with torch.no_grad():
        ref = g(z).float()
        out = fast(z).float().clone()
    diff = (out - ref).norm() / ref.norm().clamp_min(1e-30)
    result = {
        "n": n,
        "rel_l2_error": float(diff),
        "max_abs_error_over_max": float((out - ref).abs().max() / ref.abs().max()),
        "total_energy_rel_error": float(
            ((out.sum(dim=(1, 2, 3, 4)) - ref.sum(dim=(1, 2, 3, 4))).abs().mean())
            / ref.sum(dim=(1, 2, 3, 4)).abs().mean().clamp_min(1e-30)
        ),
    }
    if physics_n:
        result["physics"] = physics_check(g, fast, physics_n, seed)
    return result


def physics_check(g: Generator, fast, n: int, seed: int) -> dict:
    """Physics scores of fast and of eager showers (same latents) against one reference.

    The reference is an independent eager sample: calo.compare(fast, ref) and
    calo.compare(eager, ref) must agree (fidelity, sampling fraction, resolution). Comparing
    fast with eager directly is no test: same-latent pairs confuse the classifier term.
    """
    from scaletrain.calo import compare

    dev = next(g.parameters()).device
    batch = getattr(fast, "batch_size", n)

    def sample(fn, s: int) -> dict:
        parts, energies = [], []
        for start in range(0, n, batch):
            z, e = _latents(min(batch, n - start), g.latent_size, dev, s + start)
            with torch.no_grad():
                parts.append(fn(z).float().squeeze(1).cpu().numpy())
            energies.append(e.cpu().numpy())
        return {"ECAL": np.concatenate(parts), "energy": np.concatenate(energies)}

    eager, fast_s, ref = sample(g, seed), sample(fast, seed), sample(g, seed + 10_000)
    return {
        "n": n,
        "fast_vs_reference": _summary(compare(fast_s, ref, seed=seed)),
        "eager_vs_reference": _summary(compare(eager, ref, seed=seed)),
    }


def _summary(res) -> dict:
    overall = res.scores.get("overall", res.scores)
    keep = ("sf_rel_error", "resolution_ratio", "auc", "frechet")
    return {"fidelity": float(res.fidelity), **{k: overall.get(k) for k in keep if k in overall}}
