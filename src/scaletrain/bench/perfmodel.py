"""A performance model for data-parallel 3DGAN training on many GPUs.

Inputs: the measured compute time of one training step on one GPU, the bytes each step must
exchange, and an alpha-beta network (a message costs alpha + bytes / bandwidth). Weak
scaling: every GPU keeps its batch, so p GPUs process p batches per step.

- allreduce (synchronous, ring): each of the step's `messages` all-reduces costs
  2 (p - 1) alpha + 2 (p - 1) / p * bytes / bandwidth; the part of it hidden behind the
  backward pass is `overlap` (0: none, 1: all).
- parameter server (downpour, `masters` independent masters each owning a shard of the
  workers): a worker computes, then pushes its update and pulls fresh weights. A master
  handles one worker at a time: receive, apply, send, `master_seconds` per update. It is
  a single server queue: the workers' demand p / (compute + exchange) updates/s is capped
  at the masters' rate masters / master_seconds. Past p* = masters * (compute + exchange) /
  master_seconds, more workers add nothing: the sub-linear speed-up of the source paper.
"""

from __future__ import annotations

from dataclasses import dataclass

# parameter counts of the published 3DGAN as built in PyTorch (models/threedgan.py)
GENERATOR_PARAMS = 872_808
DISCRIMINATOR_PARAMS = 73_402


@dataclass(frozen=True)
class Network:
    alpha_s: float = 10e-6  # per-message latency (inter-node InfiniBand / NCCL)
    bandwidth_bps: float = 25e9  # bytes/s per GPU (200 Gb/s HDR InfiniBand)

    def message(self, nbytes: float) -> float:
        return self.alpha_s + nbytes / self.bandwidth_bps


@dataclass(frozen=True)
class Workload:
    """One training step on one GPU."""

    step_seconds: float  # measured compute time of one step
    batch_size: int  # real samples per step and GPU
    grad_bytes: float = 4.0 * (DISCRIMINATOR_PARAMS + 2 * GENERATOR_PARAMS)  # D once, G twice
    messages: int = 3  # all-reduces per step: the D update and the two G updates
    weight_bytes: float = 4.0 * (DISCRIMINATOR_PARAMS + GENERATOR_PARAMS)  # one model copy

    @classmethod
    def from_rate(cls, samples_per_s: float, batch_size: int, **kw) -> Workload:
        return cls(step_seconds=batch_size / samples_per_s, batch_size=batch_size, **kw)


def allreduce_seconds(nbytes: float, p: int, net: Network, messages: int = 1) -> float:
    """Ring all-reduce of `nbytes` split into `messages` all-reduces among p ranks."""
    if p <= 1:
        return 0.0
    return messages * 2 * (p - 1) * net.alpha_s + 2 * (p - 1) / p * nbytes / net.bandwidth_bps


def allreduce_throughput(p: int, work: Workload, net: Network, overlap: float = 0.0) -> float:
    """Samples/s of synchronous data parallelism on p GPUs."""
    comm = allreduce_seconds(work.grad_bytes, p, net, work.messages)
    step = work.step_seconds + (1.0 - overlap) * comm
    return p * work.batch_size / step


def master_seconds(work: Workload, net: Network, apply_bps: float = 20e9) -> float:
    """Time a master spends on one worker's update: receive it, apply it, send weights.

    The optimizer update reads and writes parameters, update and RMS state: about 16 bytes
    per float32 parameter at `apply_bps` of memory bandwidth.
    """
    params = work.weight_bytes / 4.0
    return 2 * net.message(work.weight_bytes) + 16 * params / apply_bps


def paramserver_throughput(
    p: int,
    work: Workload,
    net: Network,
    *,
    masters: int = 1,
    sync_every: int = 1,
    apply_bps: float = 20e9,
) -> float:
    """Samples/s of p workers (besides the masters) behind `masters` parameter servers."""
    cycle = sync_every * work.step_seconds + 2 * net.message(work.weight_bytes)
    demand = p / cycle  # updates/s the workers would send if the masters kept up
    capacity = masters / master_seconds(work, net, apply_bps)
    return min(demand, capacity) * sync_every * work.batch_size


def saturation_workers(
    work: Workload, net: Network, *, masters: int = 1, sync_every: int = 1, apply_bps=20e9
) -> float:
    """Workers p* beyond which the masters, not the workers, set the rate."""
    cycle = sync_every * work.step_seconds + 2 * net.message(work.weight_bytes)
    return masters * cycle / master_seconds(work, net, apply_bps)


def scaling_table(
    gpus: list[int],
    work: Workload,
    net: Network = Network(),
    *,
    overlap: float = 0.0,
    masters: int = 1,
    sync_every: int = 1,
) -> list[dict]:
    """Rows of p, throughput and efficiency for all-reduce and parameter-server training."""
    one = work.batch_size / work.step_seconds
    rows = []
    for p in gpus:
        ar = allreduce_throughput(p, work, net, overlap)
        ps = paramserver_throughput(p, work, net, masters=masters, sync_every=sync_every)
        rows.append(
            {
                "gpus": p,
                "allreduce_samples_per_s": ar,
                "allreduce_speedup": ar / one,
                "allreduce_efficiency": ar / (p * one),
                "paramserver_samples_per_s": ps,
                "paramserver_speedup": ps / one,
                "paramserver_efficiency": ps / (p * one),
            }
        )
    return rows
