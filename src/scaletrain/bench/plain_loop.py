"""The 1-process reference of `bench scaling`: the same model, optimizer, data, batch,
precision and device, trained by a hand-written PyTorch loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from scaletrain.bench.scaling import synthetic_data
from scaletrain.bench.step_timer import StepTimer, sync
from scaletrain.config import Config, from_dict


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
            sync(self.loop.device)
        start = time.perf_counter()
        self.loop.run(self.block)
        sync(self.loop.device)
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
