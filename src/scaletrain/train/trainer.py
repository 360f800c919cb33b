"""The training loop: epochs of steps, validation, checkpoints, metrics — for any task and
any distribution strategy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scaletrain.config import Config, save_config
from scaletrain.data.arrays import open_data
from scaletrain.data.dataset import ShowerData, ShowerSplit
from scaletrain.errors import TrainingError
from scaletrain.models.registry import build_models
from scaletrain.parallel.strategy import Strategy
from scaletrain.tasks import build_task
from scaletrain.train import checkpoint as ckpt
from scaletrain.train.metrics import MetricsLogger
from scaletrain.train.progress import StepProgress
from scaletrain.train.provenance import write_provenance
from scaletrain.train.rundir import prepare_run_dir
from scaletrain.train.stopping import StopSignals


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    steps: int
    seconds: float
    samples_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    # stopped early on a signal: which (as this process saw it), and the checkpoint written
    stopped: str | None = None
    checkpoint: Path | None = None


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one rank's random draws; the large stride keeps rank r of run seed s from
    repeating rank 0 of a neighbouring seed s + r."""
    return seed + 7919 * rank


class Trainer:
    def __init__(
        self,
        cfg: Config,
        *,
        strategy: Strategy | None = None,
        resume: bool = False,
        overwrite: bool = False,
        data: ShowerData | None = None,
        epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
        step_callback: Callable[[int], None] | None = None,
        stop: StopSignals | None = None,
    ) -> None:
        """`epoch_callback(epochs_done, metrics)` runs on the main rank after each epoch's
        validation and checkpoint; an exception it raises stops training (HPO pruning).
        `step_callback(step)` runs on every training rank right after each step and its
        strategy exchange (`end_step`), before logging: benchmarks time steps with it.
        `stop`: a signal it caught ends training after the step (agreed by every process
        of the group), with a checkpoint; given to every process or to none."""
        self.cfg = cfg
        self.epoch_callback = epoch_callback
        self.step_callback = step_callback
        self.stop = stop
        self.strategy = strategy or Strategy()
        main = self.strategy.is_main
        self.run_dir = Path(cfg.run.dir)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = self.strategy.device(cfg.run.device)
        self.data = data or open_data(cfg)  # data.source (ArrayData) or data.path's showers
        rank, world = self.strategy.data_rank
        self.train_split: ShowerSplit = self.data.split("train", rank=rank, world_size=world)
        self.val_split: ShowerSplit | None = (
            self.data.split("val") if cfg.data.val_fraction > 0 else None
        )

        torch.manual_seed(cfg.run.seed)  # same initial weights on every rank
        # the strategy places the models: on this device, or only this rank's pipeline stage
        models = self.strategy.place_models(
            build_models(cfg.model.name, cfg.model.args), self.device
        )
        autocast = None
        if cfg.run.precision == "bf16":
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
        # ranks that read different data also draw different latents and label flips;
        # ranks that share their data (pipeline stages) draw the same
        self.task = build_task(
            cfg, models, self.device, autocast, seed=rank_seed(cfg.run.seed, rank)
        )
        if main:  # only now: bad data or models must not touch an existing run
            prepare_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        self.epoch = 0  # completed epochs
        self.batch_in_epoch = 0  # batches done in the current epoch (resume mid-epoch)
        self.step = 0
        self.saved_step = -1  # the step of the last checkpoint written (or taken part in)
        self.best: dict[str, Any] = {}
        if resume:
            self._load(ckpt.load_checkpoint(self.run_dir))
        else:
            # other ranks draw other dropout masks; their initial weights are already equal
            torch.manual_seed(rank_seed(cfg.run.seed, self.strategy.rank))
        self.strategy.setup(
            self.task.models,
            self.task.optimizers,
            steps_per_epoch=self.train_split.num_batches(cfg.train.batch_size),
            step=self.step,
        )
        self.metrics = MetricsLogger(self.run_dir, enabled=main)
        if main:
            save_config(cfg, self.run_dir / "config.yaml")
            write_provenance(
                self.run_dir,
                cfg.digest(),
                cfg.run.seed,
                self.data.paths,
                self.strategy.describe(),
                {"resumed": resume},
            )

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainResult:
        cfg = self.cfg.train
        per_epoch = self.train_split.num_batches(cfg.batch_size)
        if per_epoch == 0:
            raise TrainingError(
                f"train.batch_size={cfg.batch_size} exceeds the {self.train_split.n} training "
                "showers of this process; lower the batch size or add data"
            )
        start, t0, samples = self.epoch, time.perf_counter(), 0
        last: dict[str, float] = {}
        stopped: str | None = None
        progress = StepProgress(
            enabled=cfg.progress and self.strategy.is_main,
            samples_per_step=cfg.batch_size * self.strategy.world_size,
        )
        with progress:
            for epoch in range(start, cfg.epochs):
                first = self.batch_in_epoch if epoch == start else 0
                progress.start_epoch(epoch, cfg.epochs, per_epoch)
                self._set_train(True)
                running: dict[str, list[Any]] = {}  # each metric's values since the last log
                count = 0
                batches = self.train_split.batches(
                    cfg.batch_size, epoch=epoch, shuffle=True, start_batch=first
                )
                for i, batch in enumerate(batches, start=first):
                    out = self.task.train_step(batch, self._updater(epoch, i))
                    self.step += 1
                    self.batch_in_epoch = i + 1
                    self.strategy.end_step(self.step)
                    if self.step_callback is not None:
                        self.step_callback(self.step)
                    samples += cfg.batch_size
                    count += 1
                    for k, v in out.items():
                        running.setdefault(k, []).append(v)
                    if self.step % cfg.log_every == 0 or i == per_epoch - 1:
                        means = {f"train/{k}": _total(vs) / count for k, vs in running.items()}
                        running, count = {}, 0
                        means = self.strategy.reduce_metrics(means)
                        self.metrics.log(self.step, epoch, means)
                        progress.update(i + 1, means)
                        last.update(means)
                    else:
                        progress.advance(i + 1)
                    every = cfg.checkpoint_every
                    if every and self.step % every == 0 and i < per_epoch - 1:
                        self._save_mid_epoch()
                    if self.stop is not None and self.strategy.agree_stop(
                        self.stop.requested is not None
                    ):
                        stopped = self._stop_here()
                        break
                if stopped is not None:
                    break
                self.epoch, self.batch_in_epoch = epoch + 1, 0
                epoch_metrics = self._end_epoch(epoch)
                last.update(epoch_metrics)
                progress.end_epoch(epoch_metrics)
        seconds = time.perf_counter() - t0
        self.metrics.close()
        return TrainResult(
            self.run_dir,
            self.epoch,
            self.step,
            seconds,
            samples * self.strategy.world_size / max(seconds, 1e-9),
            last,
            dict(self.best),
            stopped,
            self._checkpoint_path() if stopped else None,
        )

    def serve(self) -> TrainResult:
        """This rank holds the central model of a parameter server: the strategy's server loop
        trains it with the workers' updates; each completed epoch is validated and saved here.
        """
        cfg = self.cfg.train
        per_epoch = self.train_split.num_batches(cfg.batch_size)
        t0, start_step = time.perf_counter(), self.step
        last: dict[str, float] = {}
        stopped: str | None = None
        signalled = (lambda: self.stop.requested is not None) if self.stop is not None else None
        for epoch, step, metrics in self.strategy.serve(
            per_epoch, cfg.epochs, self.step, signalled
        ):
            if metrics is None:  # the workers stopped on a signal, at `step`
                self.epoch, self.batch_in_epoch = divmod(step, per_epoch)
                self.step = step
                stopped = self._stop_here(by_workers=True)
                break
            self.epoch, self.step, self.batch_in_epoch = epoch + 1, step, 0
            self.metrics.log(step, epoch, metrics)
            last.update(metrics)
            last.update(self._end_epoch(epoch))
        seconds = time.perf_counter() - t0
        self.metrics.close()
        samples = (self.step - start_step) * cfg.batch_size * self.strategy.world_size
        return TrainResult(
            self.run_dir, self.epoch, self.step, seconds, samples / max(seconds, 1e-9), last,
            dict(self.best), stopped, self._checkpoint_path() if stopped else None,
        )  # fmt: skip

    def _stop_here(self, by_workers: bool = False) -> str:
        """Stopping early on a signal: this step's checkpoint (collective, as every one);
        returns what stopped training."""
        if self.saved_step != self.step:
            self._save_mid_epoch()
        own = self.stop.requested if self.stop is not None else None
        return own or ("a signal to the workers" if by_workers else "a signal to another rank")

    def _checkpoint_path(self) -> Path:
        return self.run_dir / ckpt.checkpoint_name(self.step)

    def _updater(self, epoch: int, batch_index: int):
        on_nonfinite = self.cfg.train.on_nonfinite

        def update(name: str, loss: torch.Tensor) -> None:
            optimizer = self.task.optimizers[name]
            finite = math.isfinite(loss.item())  # one call: cheaper than isfinite, then bool
            if on_nonfinite != "stop":  # the ranks of a replica skip or go on together
                finite = self.strategy.agree_finite(finite)
            if not finite:
                self._nonfinite(name, epoch, batch_index, loss)
                if on_nonfinite == "lower_lr":
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.5
                return  # skip this update
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.strategy.after_backward(name, self.task.models[name])
            optimizer.step()

        return update

    def _nonfinite(self, name: str, epoch: int, batch_index: int, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        whose = f"{name} loss = {value}"
        if math.isfinite(value):
            whose = f"{name} loss non-finite on another rank ({value:.4g} here)"
        where = f"epoch {epoch}, batch {batch_index}, {whose}"
        log = self._nonfinite_log()
        if log is not None:
            log.parent.mkdir(exist_ok=True)
            with open(log, "a") as fh:
                fh.write(where + "\n")
        if self.cfg.train.on_nonfinite == "stop":
            see = f"; see {log}" if log is not None else ""
            raise TrainingError(
                f"non-finite loss at {where}{see} (train.on_nonfinite: skip or lower_lr to go on)"
            )

    def _nonfinite_log(self) -> Path | None:
        """Where this process records its non-finite losses: the main rank in the run dir, a
        parameter-server worker (whose losses no other rank sees) beside its own state; the
        other ranks of an all-reduce group agree with the main one, which records theirs."""
        if self.strategy.is_main:
            return self.run_dir / "nonfinite.log"
        if self.strategy.keeps_own_state:
            return self.run_dir / "ranks" / f"nonfinite.rank{self.strategy.rank}.log"
        return None

    def _set_train(self, mode: bool) -> None:
        for model in self.task.models.values():
            model.train(mode)

    # ------------------------------------------------------------------ epoch end

    def _end_epoch(self, epoch: int) -> dict[str, float]:
        main = self.strategy.is_main
        # a model split over the ranks needs all of them for every forward and for the state
        everyone = self.strategy.model_parallel
        metrics = self.validate() if main or everyone else {}
        every = self.cfg.train.fidelity_every
        if (main or everyone) and every and (epoch + 1) % every == 0 and self.cfg.task == "gan":
            metrics["val/fidelity"] = self.fidelity()
        state = self._gather_state()  # after validation, which draws from the main's streams
        if state is not None:
            self.metrics.log(self.step, epoch + 1, metrics, kind="epoch")
            self._save(metrics, state)
            if self.epoch_callback is not None:
                self.epoch_callback(epoch + 1, metrics)
        return metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_split is None or self.val_split.n == 0:
            return {}
        self._set_train(False)
        limit = self.cfg.train.val_batches or None
        bs = min(self.cfg.train.batch_size, self.val_split.n)
        totals: dict[str, float] = {}
        n = 0
        for i, batch in enumerate(self.val_split.batches(bs, shuffle=False, drop_last=False)):
            if limit is not None and i >= limit:
                break
            weight = next(iter(batch.values())).shape[0]
            for k, v in self.task.eval_step(batch).items():
                totals[k] = totals.get(k, 0.0) + float(v) * weight
            n += weight
        self._set_train(True)
        return {f"val/{k}": v / n for k, v in totals.items()} if n else {}

    def fidelity(self) -> float:
        """The physics fidelity of generated vs held-out showers (lower is better)."""
        from scaletrain.calo import fidelity_score
        from scaletrain.calo.binning import quantile_edges
        from scaletrain.generate import generate_like

        reference = self.val_split.arrays(self.cfg.train.fidelity_showers)
        generated = generate_like(self.task, reference, seed=self.cfg.run.seed)
        return float(
            fidelity_score(generated, reference, energy_bins=quantile_edges(reference["energy"]))
        )

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds (with `model_parallel`, every rank calls this and the main
        rank's holds the gathered models)."""
        models, optimizers = self.strategy.state_dicts(self.task.models, self.task.optimizers)
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "batch": self.batch_in_epoch,
            "step": self.step,
            "models": models,
            "optimizers": optimizers,
            "task": self.task.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": _rng_state(self.device),
            "best": dict(self.best),
        }

    def _gather_state(self) -> dict[str, Any] | None:
        """This step's checkpoint at the main rank, None at the others. Collective, in the
        same order everywhere: the random streams of every process, then (model_parallel)
        every stage's part of the models."""
        self.saved_step = self.step
        # this process's random streams (PyTorch's, the task's): after a resume each process
        # continues its own, as if never stopped (the ranks draw different dropout masks, and
        # only the main one validates); the replica's are gathered at the main one
        streams = {"rng": _rng_state(self.device), "task": self.task.state_dict()}
        if self.strategy.keeps_own_state:
            self._save_own_state(streams)
        ranks = self.strategy.gather(streams)
        main = self.strategy.is_main
        state = self.state() if main or self.strategy.model_parallel else {}
        return self._with_ranks(state, ranks) if main else None

    def _own_state_path(self) -> Path:
        return self.run_dir / "ranks" / f"rank{self.strategy.rank}.pt"

    def _save_own_state(self, streams: dict[str, Any]) -> None:
        """This process's optimizers, random streams and strategy state (a parameter-server
        worker's or sub-master's: the top master's checkpoint holds the central model and
        its own rule), for a resumed run to go on with."""
        path = self._own_state_path()
        path.parent.mkdir(exist_ok=True)
        optimizers = {name: opt.state_dict() for name, opt in self.task.optimizers.items()}
        own = {"step": self.step, "optimizers": optimizers, **streams,
               "strategy": self.strategy.state_dict()}  # fmt: skip
        ckpt.save_checkpoint(path, own)

    @staticmethod
    def _with_ranks(state: dict[str, Any], ranks: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {**state, "ranks": ranks} if ranks and len(ranks) > 1 else state

    def _save(self, metrics: dict[str, float], state: dict[str, Any]) -> None:
        key, mode = self.cfg.train.best_metric, self.cfg.train.best_mode
        value = metrics.get(key)
        better = value is None  # no such metric this epoch: the latest checkpoint stands in
        if value is not None and math.isfinite(value):
            previous = self.best.get("value")
            better = previous is None or (value < previous if mode == "min" else value > previous)
            if better:
                self.best = {"metric": key, "value": value, "epoch": self.epoch}
        # with this epoch's score counted: a run resumed from it compares with the true best
        state = {**state, "metrics": metrics, "best": dict(self.best)}
        path = ckpt.save_checkpoint(self.run_dir / ckpt.checkpoint_name(self.step), state)
        if better:
            ckpt.publish_copy(path, self.run_dir / "best.pt")
        ckpt.keep_last(self.run_dir, self.cfg.train.keep_last)

    def _save_mid_epoch(self) -> None:
        state = self._gather_state()
        if state is not None:
            ckpt.save_checkpoint(self.run_dir / ckpt.checkpoint_name(self.step), state)
            ckpt.keep_last(self.run_dir, self.cfg.train.keep_last)

    def _load(self, state: dict[str, Any]) -> None:
        names = list(self.task.models)
        self.strategy.load_state_dicts(
            self.task.models,
            self.task.optimizers,
            ckpt.model_states(state, names, self.run_dir),
            state.get("optimizers", {}),
        )
        ranks = state.get("ranks") or []
        # this process's own random streams when the checkpoint holds them (else the main's)
        own = ranks[self.strategy.group_rank] if self.strategy.group_rank < len(ranks) else state
        path = self._own_state_path()
        if self.strategy.keeps_own_state and path.is_file():  # optimizers, streams, strategy
            own = ckpt.load_checkpoint(path, required=("optimizers", "rng"))
            for name, optimizer_state in own["optimizers"].items():
                if name in self.task.optimizers:
                    self.task.optimizers[name].load_state_dict(optimizer_state)
            self.strategy.load_state_dict(own.get("strategy", {}))
        elif not self.strategy.keeps_own_state:
            self.strategy.load_state_dict(state.get("strategy", {}))
        self.task.load_state_dict(own.get("task", {}))
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch = int(state.get("batch", 0))
        self.best = dict(state.get("best", {}))
        _set_rng_state(own.get("rng", {}), self.device)


def _total(values: list[Any]) -> float:
    """The sum of one metric's values since the last log, tensors in one reduction: an add
    per step would cost, on the CPU, as much as a small layer's forward."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    rest = sum(float(v) for v in values if not isinstance(v, torch.Tensor))
    return (float(torch.stack(tensors).sum()) if tensors else 0.0) + rest


def _rng_state(device: torch.device) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":  # its own GPU's only: a resumed job may see other GPUs
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng_state(rng: dict[str, Any], device: torch.device) -> None:
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda")
    if cuda is None or device.type != "cuda":
        return
    if isinstance(cuda, list):  # an older checkpoint: the state of every GPU it saw
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= len(cuda):
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda, device)


def train(
    cfg: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    strategy: Strategy | None = None,
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
    stop: StopSignals | None = None,
) -> TrainResult:
    """Train as configured; returns where the run is and its final metrics (and, when a
    signal of `stop` ended it early, which and the checkpoint written)."""
    trainer = Trainer(
        cfg, strategy=strategy, resume=resume, overwrite=overwrite,
        epoch_callback=epoch_callback, stop=stop,
    )  # fmt: skip
    try:
        return trainer.serve() if trainer.strategy.serves else trainer.fit()
    finally:
        trainer.strategy.close()
