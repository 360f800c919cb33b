"""How training steps are distributed: one strategy object per process, made by the factory."""

from __future__ import annotations

from scaletrain.config import ParallelConfig
from scaletrain.errors import ConfigError
from scaletrain.parallel.layout import Layout, LayoutError
from scaletrain.parallel.strategy import Strategy
from scaletrain.parallel.world import World

__all__ = ["Layout", "LayoutError", "Strategy", "World", "make_layout", "make_strategy"]

PS_MODES = ("downpour", "easgd", "gem")


def make_layout(cfg: ParallelConfig, world_size: int) -> Layout:
    """The layout this mode needs for `world_size` processes (LayoutError with the table)."""
    if cfg.mode in PS_MODES:
        return Layout.for_world(world_size, masters=cfg.masters, workers=cfg.workers)
    return Layout.for_world(world_size)


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
    from scaletrain.parallel.paramserver import ParamServer, ParamServerWorker

    channel = world.comm.Dup()
    if layout.role(world.rank).serves:
        return ParamServer(cfg, world, layout, channel)
    return ParamServerWorker(cfg, world, layout, replica, channel)
