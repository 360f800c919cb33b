"""How training steps are distributed: one strategy object per process, made by the factory."""

from __future__ import annotations

from scaletrain.config import Config, ParallelConfig
from scaletrain.errors import ConfigError
from scaletrain.parallel.layout import Layout, LayoutError
from scaletrain.parallel.strategy import Strategy
from scaletrain.parallel.world import World

__all__ = ["Layout", "LayoutError", "Strategy", "World", "advice", "make_layout", "make_strategy"]

PS_MODES = ("downpour", "easgd", "gem")


def make_layout(cfg: ParallelConfig, world_size: int) -> Layout:
    """The layout this mode needs for `world_size` processes (LayoutError with the table)."""
    if cfg.mode not in PS_MODES:
        return Layout.for_world(world_size)
    layout = Layout.for_world(world_size, masters=cfg.masters, workers=cfg.workers)
    scaled = cfg.lr_scaling != "none" or cfg.warmup_epochs > 0
    if scaled and layout.gpus == 1:
        raise ConfigError(
            f"parallel.lr_scaling and parallel.warmup_epochs scale the learning rate with the "
            f"processes that all-reduce one replica's batch; under --mode {cfg.mode} each "
            "worker here is one process, so there is nothing to scale: leave them at none and "
            "0 (or use --mode allreduce)"
        )
    return layout


def advice(cfg: Config) -> list[str]:
    """Settings that run but work against the chosen mode: one line each, for the user."""
    notes = []
    optim = cfg.optim
    if cfg.parallel.mode != "gem":
        return notes
    if optim.momentum > 0:
        notes.append(
            f"--mode gem supplies the momentum itself (parallel.gem_momentum); the workers' "
            f"own, optim.momentum={optim.momentum:g}, stacks on it and over-amplifies their "
            "updates (--set optim.momentum=0)"
        )
    if optim.name != "sgd":
        notes.append(
            f"--mode gem is derived for workers that step plain SGD; with optim.name="
            f"{optim.name} it runs, but on the 3DGAN it learned an order of magnitude more "
            "slowly than easgd or downpour (docs/physics.md)"
        )
    return notes


def make_strategy(cfg: ParallelConfig, world: World) -> Strategy:
    """The strategy of this process's role; communicators are split here, in the same order
    on every rank (MPI splits are collective)."""
    if cfg.master_optim is not None and cfg.mode != "downpour":
        raise ConfigError(
            f"parallel.master_optim is for --mode downpour (its master's optimizer), not {cfg.mode}"
        )
    if cfg.mode == "none":
        if world.size > 1:
            raise ConfigError(
                f"parallel.mode is none but {world.size} processes were started; "
                f"choose --mode allreduce, downpour, easgd, gem or pipeline"
            )
        return Strategy()
    if cfg.mode == "pipeline":
        from scaletrain.parallel.pipeline import PipelineStrategy

        return PipelineStrategy(cfg, world)
    layout = make_layout(cfg, world.size)
    replica = world.split(layout.replica_color(world.rank))
    if cfg.mode == "allreduce":
        from scaletrain.parallel.allreduce import AllReduceStrategy

        return AllReduceStrategy(cfg, world, layout, replica)
    from scaletrain.parallel.paramserver import ParamServer
    from scaletrain.parallel.psworker import ParamServerWorker

    channel = world.comm.Dup()
    if layout.role(world.rank).serves:
        return ParamServer(cfg, world, layout, channel)
    return ParamServerWorker(cfg, world, layout, replica, channel)
