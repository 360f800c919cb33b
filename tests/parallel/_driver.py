"""Runs several trainings in one MPI job (one interpreter start-up per process, not per run).

    mpiexec -n N python _driver.py SPEC.json OUT.json

SPEC: {"runs": [{"name": str, "config": {...}, "overrides": [...], "hang": {"rank", "step"},
"resume": bool, "signal": {"rank", "step"}, "poison": {"rank", "step"}}]} ("config" is a
nested config dict, optional; the overrides apply on top; "resume": continue the run in
run.dir from its last checkpoint; "signal": that rank sends itself SIGUSR1 right after that
step (or, {"rank", "epoch"}, at the main rank: after that epoch's checkpoint), every rank
stopping on train.stop_signals as `scaletrain train` does; "poison": that rank's losses of
the step after that one are NaN).
OUT (written by rank 0): {name: {"best", "metrics", "steps", "error", "stopped",
"checkpoint"}}; every
rank also writes OUT.rank<r>.json with a checksum of its final weights, its last step, a
hash of its random state and the workers whose GEM proxies it started with.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

from scaletrain.config import apply_override, from_dict
from scaletrain.errors import ScaletrainError
from scaletrain.parallel import World, make_strategy
from scaletrain.train.stopping import StopSignals
from scaletrain.train.trainer import Trainer


def weights_checksum(models: dict[str, torch.nn.Module]) -> float:
    return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(all_params(models))))


def all_params(models: dict[str, torch.nn.Module]) -> list[torch.Tensor]:
    return [p.detach() for name in sorted(models) for p in models[name].parameters()]


def write_atomically(path: Path, obj: dict) -> None:
    """A reader sees the whole file or none (an abort may end this process at any time)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def hang_at(strategy, step: int, seconds: float) -> None:
    """Make this rank go silent (as a hung process) at `step`."""
    end_step = strategy.end_step

    def silent(s: int) -> None:
        if s == step:
            time.sleep(seconds)
        end_step(s)

    strategy.end_step = silent


def poison_at(trainer: Trainer, step: int) -> None:
    """Make this rank's losses NaN in the step after `step` steps (as a bad batch would)."""
    make = trainer._updater

    def updater(epoch: int, batch_index: int):
        update = make(epoch, batch_index)
        nan = float("nan")
        return lambda name, loss: update(name, loss * nan if trainer.step == step else loss)

    trainer._updater = updater


def signal_at(count: int):
    """A callback that sends this process SIGUSR1 when called with `count` (a step, an
    epoch)."""

    def callback(s: int, *_: object) -> None:
        if s == count:
            os.kill(os.getpid(), signal.SIGUSR1)

    return callback


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out_path = Path(sys.argv[2])
    world = World.detect()
    results, mine = {}, {}
    for run in spec["runs"]:
        raw = run.get("config", {})
        for item in run.get("overrides", []):
            apply_override(raw, item)
        cfg = from_dict(raw)
        strategy = make_strategy(cfg.parallel, world)
        hang = run.get("hang")
        if hang and hang["rank"] == world.rank:
            hang_at(strategy, hang["step"], hang.get("seconds", 120))
        record: dict = {}
        sig = run.get("signal")
        stop = StopSignals(cfg.train.stop_signals) if sig else None
        mine_to_signal = sig is not None and sig["rank"] == world.rank
        trainer = Trainer(
            cfg, strategy=strategy, resume=run.get("resume", False), stop=stop,
            step_callback=signal_at(sig["step"]) if mine_to_signal and "step" in sig else None,
            epoch_callback=signal_at(sig["epoch"]) if mine_to_signal and "epoch" in sig else None,
        )  # fmt: skip
        poison = run.get("poison")
        if poison and poison["rank"] == world.rank:
            poison_at(trainer, poison["step"])
        # the rule state this process starts from (a parameter server's, after a resume)
        rule = strategy.state_dict().get("rule", {})
        mine[f"{run['name']}:proxies"] = sorted(int(c) for c in rule.get("proxy", {}))
        try:
            with stop or nullcontext():
                result = trainer.serve() if strategy.serves else trainer.fit()
            record = {
                "best": result.best,
                "metrics": result.metrics,
                "steps": result.steps,
                "seconds": result.seconds,
                "samples_per_s": result.samples_per_s,
                "stopped": result.stopped,
                # the checkpoint a stop wrote, as it was then (a resume may rotate it out)
                "checkpoint": (
                    result.checkpoint.name
                    if result.checkpoint is not None and result.checkpoint.is_file()
                    else None
                ),
            }
        except ScaletrainError as exc:
            record = {"error": str(exc)}
            if world.rank == 0:
                write_atomically(out_path, {**results, run["name"]: record})
            print(f"rank {world.rank}: {exc}", file=sys.stderr, flush=True)
            world.abort(3)
        finally:
            strategy.close()
        mine[run["name"]] = weights_checksum(trainer.task.models)
        mine[f"{run['name']}:step"] = trainer.step
        mine[f"{run['name']}:rng"] = hashlib.sha1(torch.get_rng_state().numpy()).hexdigest()
        results[run["name"]] = record
    write_atomically(Path(f"{out_path}.rank{world.rank}.json"), mine)
    if world.rank == 0:
        write_atomically(out_path, results)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        World.detect().abort(4)
