"""`bench scaling`'s processes: each measured run's rank entry (`scaletrain bench
scaling-rank SPEC`), the framework's trainer or the plain loop, timing its steady-state steps."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from scaletrain.bench.plain_loop import PlainBlocks, plain_loop
from scaletrain.bench.step_timer import StepTimer
from scaletrain.config import from_dict
from scaletrain.errors import ScaletrainError


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
