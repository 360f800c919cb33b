"""Synchronous data parallelism: gradients averaged over a group, overlapped with backward.

Instead of wrapping models in DDP (which would rename the task's modules and, with its
default `broadcast_buffers=True`, rewrite BatchNorm buffers in place between the
discriminator's two forwards), every parameter gets a post-accumulate-grad hook. When the
last gradient of a bucket (~25 MB, parameters in reverse order, as DDP) has arrived, the
bucket is flattened and an asynchronous all-reduce starts while backward goes on;
`after_backward` waits for the buckets and writes the averages back. Hooks only fire for
parameters that receive gradients, so a frozen discriminator during the generator steps, or
a generator run under no_grad during the discriminator step, costs nothing. Buffers (batch
norm statistics) are broadcast from the group's first rank once per step.

A `Watchdog` (liveness.py) beats for every process of the group: a rank that dies or freezes
ends the group within `parallel.timeout_s`, named; a collective that fails otherwise (a
rank stuck with its threads alive: the process group's timeout) is one TrainingError.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.errors import ConfigError, TrainingError
from scaletrain.parallel.layout import Layout
from scaletrain.parallel.liveness import Watchdog
from scaletrain.parallel.stopvote import StopVote
from scaletrain.parallel.strategy import Strategy
from scaletrain.parallel.world import World, init_process_group

BUCKET_BYTES = 25 * 2**20


class _Bucket:
    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.flat = torch.zeros(sum(self.sizes), dtype=params[0].dtype, device=params[0].device)
        self.ready = 0
        self.work: Any = None


class GradientSync:
    """Bucketed, overlapped gradient averaging of one module over a process group."""

    def __init__(self, module: nn.Module, group_size: int, bucket_bytes: int = BUCKET_BYTES):
        self.group_size = group_size
        params = [p for p in module.parameters() if p.requires_grad]
        self.buckets: list[_Bucket] = []
        current: list[nn.Parameter] = []
        nbytes = 0
        for p in reversed(params):  # gradients arrive roughly last layer first
            same_kind = not current or (p.dtype, p.device) == (current[0].dtype, current[0].device)
            if current and (nbytes + p.numel() * p.element_size() > bucket_bytes or not same_kind):
                self.buckets.append(_Bucket(current))
                current, nbytes = [], 0
            current.append(p)
            nbytes += p.numel() * p.element_size()
        if current:
            self.buckets.append(_Bucket(current))
        self._bucket_of = {id(p): b for b in self.buckets for p in b.params}
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    def _on_grad(self, param: nn.Parameter) -> None:
        bucket = self._bucket_of[id(param)]
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            self._launch(bucket)

    @torch.no_grad()
    def _launch(self, bucket: _Bucket) -> None:
        import torch.distributed as dist

        offset = 0
        for p, n in zip(bucket.params, bucket.sizes, strict=True):
            view = bucket.flat[offset : offset + n]
            if p.grad is None:
                view.zero_()
            else:
                view.copy_(p.grad.reshape(-1))
            offset += n
        bucket.flat.div_(self.group_size)
        bucket.work = dist.all_reduce(bucket.flat, async_op=True)

    @torch.no_grad()
    def finish(self) -> None:
        """Wait for every bucket that saw gradients and write the averages back."""
        for bucket in self.buckets:
            if bucket.ready == 0:
                continue  # no gradient for this bucket in this backward (same on all ranks)
            if bucket.work is None:  # some parameters were unused: reduce what there is
                self._launch(bucket)
            bucket.work.wait()
            offset = 0
            for p, n in zip(bucket.params, bucket.sizes, strict=True):
                if p.grad is not None:
                    p.grad.copy_(bucket.flat[offset : offset + n].view_as(p.grad))
                offset += n
            bucket.ready, bucket.work = 0, None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class LrScaling:
    """Learning rate × N (linear) or × √N (sqrt) for N processes, reached over warm-up epochs.

    The factor is applied as a ratio from one step to the next, so that other changes to the
    learning rate (train.on_nonfinite: lower_lr) are kept.
    """

    def __init__(self, rule: str, n: int, warmup_epochs: int, steps_per_epoch: int) -> None:
        self.target = {"none": 1.0, "linear": float(n), "sqrt": math.sqrt(n)}[rule]
        self.warmup_steps = warmup_epochs * max(steps_per_epoch, 0)

    def factor(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return 1.0 + (self.target - 1.0) * step / self.warmup_steps
        return self.target

    @staticmethod
    def rescale(optimizers: dict[str, Any], ratio: float) -> None:
        if ratio != 1.0:
            for optimizer in optimizers.values():
                for group in optimizer.param_groups:
                    group["lr"] *= ratio


class AllReduceStrategy(Strategy):
    """Every process of a replica group trains the same models on its own shard."""

    name = "allreduce"

    def __init__(self, cfg: ParallelConfig, world: World, layout: Layout, replica: Any) -> None:
        """`replica`: the MPI communicator of this process's all-reduce group (or None)."""
        self.cfg = cfg
        self.world = world
        self.layout = layout
        role = layout.role(world.rank)
        self.role = role
        self.rank = world.rank
        self.world_size = layout.trainers
        self.comm = replica
        self.group_size = layout.gpus
        self.group_rank = role.gpu
        self._device: torch.device | None = None
        self._syncs: dict[str, GradientSync] = {}
        self._models: dict[str, nn.Module] = {}
        self._optimizers: dict[str, Any] = {}
        self._lr: LrScaling | None = None
        self._watchdog: Watchdog | None = None
        self._vote: StopVote | None = None

    @property
    def is_main(self) -> bool:
        return self.world.rank == 0 and self.layout.servers == 0

    @property
    def data_rank(self) -> tuple[int, int]:
        r = self.role
        return (r.master * self.layout.workers + r.worker) * self.layout.gpus + r.gpu, (
            self.world_size
        )

    def device(self, requested: str) -> torch.device:
        self._device = self.world.device(requested)
        return self._device

    def setup(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, Any],
        *,
        steps_per_epoch: int = 0,
        step: int = 0,
    ) -> None:
        self._models, self._optimizers = models, optimizers
        if self.cfg.sync_batchnorm:
            self._convert_batchnorm(models)
        if self.group_size > 1:
            device = self._device or next(next(iter(models.values())).parameters()).device
            init_process_group(self.comm, device, self.cfg.timeout_s)
            self._watchdog = Watchdog(
                self.comm, self.cfg.timeout_s, "the all-reduce group",
                fatal=self.world.peer_loss_ends_job,
            )  # fmt: skip
            with self._collective():
                self._broadcast(models, params=True)
            size = int(self.cfg.bucket_mb * 2**20)
            self._syncs = {
                name: GradientSync(m, self.group_size, size) for name, m in models.items()
            }
            self._vote = StopVote(self.comm, self.cfg.timeout_s)
        self._lr = LrScaling(
            self.cfg.lr_scaling, self.group_size, self.cfg.warmup_epochs, steps_per_epoch
        )
        if step == 0:  # a resumed optimizer already holds the scaled learning rate
            LrScaling.rescale(optimizers, self._lr.factor(0))

    def _convert_batchnorm(self, models: dict[str, nn.Module]) -> None:
        device = self._device or torch.device("cpu")
        if device.type != "cuda":
            raise ConfigError("parallel.sync_batchnorm needs GPUs (SyncBatchNorm has no CPU path)")
        for name, model in models.items():
            if isinstance(model, nn.modules.batchnorm._BatchNorm):
                raise ConfigError(f"parallel.sync_batchnorm: model {name!r} is a bare BatchNorm")
            # converts the children in place and keeps the same Parameter objects, so the
            # optimizers built before stay valid
            nn.SyncBatchNorm.convert_sync_batchnorm(model)

    @torch.no_grad()
    def _broadcast(self, models: dict[str, nn.Module], params: bool) -> None:
        """Rank 0's parameters (and floating buffers) to the whole group, flat per model."""
        import torch.distributed as dist

        for model in models.values():
            tensors = [b for b in model.buffers() if b.is_floating_point()]
            if params:
                tensors = list(model.parameters()) + tensors
            if not tensors:
                continue
            flat = torch.cat([t.reshape(-1) for t in tensors])
            dist.broadcast(flat, src=0)
            offset = 0
            for t in tensors:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    @contextmanager
    def _collective(self) -> Iterator[None]:
        """Collectives of the group: a failure is a lost rank named by the watchdog (which
        ends this process) or, with every rank still beating, one TrainingError."""
        try:
            yield
        # Gloo/NCCL errors and timeouts, MPI errors; our own timeouts (the stop vote)
        except (RuntimeError, TrainingError) as exc:
            verdict = self._watchdog.await_verdict() if self._watchdog is not None else None
            if verdict is not None:  # not fatal to the job (a hyper-parameter study's fold)
                raise TrainingError(verdict) from None
            if isinstance(exc, TrainingError):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise TrainingError(
                f"a collective of the all-reduce group failed while every rank still beats "
                f"(a rank is stuck, or the network failed; parallel.timeout_s="
                f"{self.cfg.timeout_s:g}): {first}"
            ) from None

    def after_backward(self, name: str, module: nn.Module) -> None:
        sync = self._syncs.get(name)
        if sync is not None:
            with self._collective():
                sync.finish()

    def end_step(self, step: int) -> None:
        if self.group_size > 1:
            with self._collective():
                self._broadcast(self._models, params=False)
        if self._lr is not None:
            LrScaling.rescale(self._optimizers, self._lr.factor(step) / self._lr.factor(step - 1))

    def agree_stop(self, requested: bool) -> bool:
        if self._vote is None:
            return requested
        with self._collective():
            return self._vote(requested)

    def agree_finite(self, finite: bool) -> bool:
        if self.group_size == 1:
            return finite
        from mpi4py import MPI

        # blocking: the loss was just read on the host, and every rank needs the answer
        # before it starts the backward pass whose gradients the group averages
        flag = np.array([finite], dtype=np.int32)
        with self._collective():
            self.comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MIN)
        return bool(flag[0])

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.group_size == 1 or not metrics:
            return metrics
        from mpi4py import MPI

        keys = sorted(metrics)
        values = np.array([metrics[k] for k in keys], dtype=np.float64)
        total = np.empty_like(values)
        with self._collective():
            self.comm.Allreduce(values, total, op=MPI.SUM)
        return {k: float(v) / self.group_size for k, v in zip(keys, total, strict=True)}

    def gather(self, obj: Any) -> list[Any] | None:
        if self.group_size == 1:
            return [obj]
        with self._collective():
            return self.comm.gather(obj, root=0)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.name,
            "rank": self.world.rank,
            "world_size": self.world.size,
            "layout": self.layout.describe(),
            "lr_scaling": self.cfg.lr_scaling,
            "lr_factor": self._lr.target if self._lr else 1.0,
            "world": self.world.describe(),
        }

    def close(self) -> None:
        from scaletrain.parallel.world import destroy_process_group

        for sync in self._syncs.values():
            sync.remove()
        if self._vote is not None:
            self._vote.close()
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self.group_size > 1:
            destroy_process_group()
