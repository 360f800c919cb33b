"""Typed run configuration: YAML file + `--set a.b=c` overrides, validated once at load.

The configuration is one tree of dataclasses. Validation names the bad key and the allowed
values; unknown keys get the closest valid keys as suggestions.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from scaletrain.errors import ConfigError


def _range(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict:
    return {"min": lo, "max": hi, **kw}


@dataclass
class RunConfig:
    dir: str = "runs/default"
    seed: int = field(default=0, metadata=_range(0))
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    threads: int = field(default=0, metadata=_range(0, doc="CPU threads; 0 = PyTorch default"))


@dataclass
class DataConfig:
    path: str = "data/showers"
    val_fraction: float = field(default=0.1, metadata=_range(0.0, 0.9))
    max_showers: int | None = field(default=None, metadata=_range(1))
    # your own data instead of showers: "package.module:make_data", called with `args`,
    # returning a mapping of arrays, an (x, y) pair or a torch Dataset (docs/your-model.md)
    source: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "3dgan"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class GanConfig:
    latent_size: int = field(default=200, metadata=_range(1))
    # BCE (real/fake), MAPE (primary energy), MAPE (deposited energy): the published weights
    loss_weights: list[float] = field(default_factory=lambda: [6.0, 0.2, 0.1])
    generator_steps: int = field(default=2, metadata=_range(1))
    discriminator_steps: int = field(default=1, metadata=_range(1))
    # your own GAN losses instead of the 3DGAN's: "package.module:fn", fn(models, batch)
    # returning a loss tensor or a dict with "loss" and other scalars (docs/your-model.md)
    discriminator_loss: str | None = None
    generator_loss: str | None = None
    label_flip: float = field(default=0.05, metadata=_range(0.0, 0.5))
    image_scale: float = field(default=1.0, metadata=_range(0.0))
    energy_scale: float = field(default=0.01, metadata=_range(0.0))  # Ep/100 conditions the GAN
    gen_energy_range: list[float] = field(default_factory=lambda: [10.0, 500.0])
    # deposited energy expected for a primary energy: sampling_fraction * Ep (GeV)
    sampling_fraction: float = field(default=0.02, metadata=_range(0.0))
    # the GPU training step of tasks/fast_gan.py: auto = on for the 3DGAN on a GPU
    fast_path: Literal["auto", "on", "off"] = "auto"
    # torch.compile the fast step's losses (GPU only; a few minutes of compilation at start)
    compile: bool = True


@dataclass
class SupervisedConfig:
    target: Literal["pdg", "energy", "label"] = "pdg"
    # particle ids in class-index order, for target: pdg
    classes: list[int] = field(default_factory=lambda: [11, 211])
    # regression loss for target: energy
    regression_loss: Literal["mse", "mape"] = "mape"
    image_scale: float = field(default=1.0, metadata=_range(0.0))
    # your own loss instead of the target's: "package.module:fn", fn(outputs, batch) returning
    # a scalar tensor (or a dict with "loss"); metrics: more such functions, logged by name
    loss: str | None = None
    metrics: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    name: Literal["rmsprop", "adam", "sgd"] = "rmsprop"
    lr: float = field(default=1e-3, metadata=_range(0.0))
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    momentum: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # RMSprop rho as in Keras (PyTorch calls it alpha)
    rho: float = field(default=0.9, metadata=_range(0.0, 1.0))
    eps: float = field(default=1e-7, metadata=_range(0.0))


@dataclass
class TrainConfig:
    epochs: int = field(default=30, metadata=_range(1))
    batch_size: int = field(default=128, metadata=_range(1))
    val_batches: int = field(default=0, metadata=_range(0, doc="0 = the whole validation split"))
    keep_last: int = field(default=2, metadata=_range(1))
    # also checkpoint every N steps inside an epoch (0: only at epoch ends)
    checkpoint_every: int = field(default=0, metadata=_range(0))
    log_every: int = field(default=10, metadata=_range(1))
    progress: bool = True
    on_nonfinite: Literal["stop", "skip", "lower_lr"] = "stop"
    fidelity_every: int = field(default=0, metadata=_range(0))
    fidelity_showers: int = field(default=1000, metadata=_range(10))
    best_metric: str = "val/loss"
    best_mode: Literal["min", "max"] = "min"
    # signals that end training after the current step with a checkpoint (a batch system's
    # time limit; resume with --resume), exit code 75; [] leaves them their usual meaning
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])


@dataclass
class ParallelConfig:
    mode: Literal["none", "allreduce", "downpour", "easgd", "gem", "pipeline"] = "none"
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    warmup_epochs: int = field(default=0, metadata=_range(0))
    sync_batchnorm: bool = False
    # all-reduce bucket size: gradients are reduced in flat buckets of this many MiB
    bucket_mb: float = field(default=25.0, metadata=_range(0.0))
    masters: int = field(default=1, metadata=_range(1))
    # workers per master; 0 = every process that is not a master
    workers: int = field(default=0, metadata=_range(0))
    sync_every: int = field(default=1, metadata=_range(1))
    # downpour: the master steps the central model with an optimizer of its own, each
    # worker's update (negated) as the gradient; none: the updates are added as they come
    master_optim: OptimConfig | None = None
    # parameter-server workers train on while their exchange travels (one in flight, merged
    # at the next exchange) instead of waiting for the reply
    overlap: bool = True
    # how the exchange thread waits while the master works on its update: spin (inside MPI,
    # the lowest latency, a core busy for the round trip) or sleep (in short pauses: leaves
    # the core to the training thread where processes share cores or hyper-threads)
    reply_wait: Literal["spin", "sleep"] = "spin"
    # a client and its server on one node exchange weights through memory both map (only
    # small notices travel as messages) instead of messages copied in and out of MPI's buffers
    shared_memory: bool = True
    easgd_alpha: float = field(default=0.5, metadata=_range(0.0, 1.0))
    easgd_tau: int = field(default=1, metadata=_range(1))
    gem_momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    # GEM's proxy amplification (the authors' scripts: "2 is a good value")
    gem_kappa: float = field(default=2.0, metadata=_range(0.0))
    # the master runs GEM's update as one compiled loop over the parameters (torch.compile,
    # at start-up; the plain rule where compiling fails, e.g. without a C++ compiler)
    gem_fused: bool = True
    timeout_s: float = field(default=60.0, metadata=_range(1.0))
    # how long a parameter-server master waits for each worker's first update: the first
    # steps compile (gan.compile), autotune and fill caches, which can take minutes
    startup_timeout_s: float = field(default=1200.0, metadata=_range(1.0))
    on_worker_loss: Literal["continue", "abort"] = "continue"
    # pipeline: each batch runs through the stages as this many micro-batches (fewer when the
    # batch is smaller); stages are cut by measured FLOPs per layer, or at equal layer counts
    microbatches: int = field(default=4, metadata=_range(1, 1024))
    pipeline_split: Literal["flops", "layers"] = "flops"


@dataclass
class ParamSpec:
    """One searched hyper-parameter: a float or int range, or a list of choices."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] = field(default_factory=list)


@dataclass
class SearchConfig:
    """Hyper-parameter optimization (`scaletrain optimize`); params maps dotted config keys."""

    params: dict[str, ParamSpec] = field(default_factory=dict)
    objective: str = "val/loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: Literal["gp", "tpe", "random", "cmaes", "evolution"] = "tpe"
    trials: int = field(default=20, metadata=_range(1))
    timeout: float | None = field(default=None, metadata=_range(0.0, doc="seconds, whole study"))
    trial_timeout: float | None = field(default=None, metadata=_range(0.0))
    folds: int = field(default=1, metadata=_range(1))
    pruner: Literal["none", "median", "halving"] = "none"
    seed: int = field(default=0, metadata=_range(0))
    # evolution: chromosomes per generation, fraction kept as parents, mutation step / range
    population: int = field(default=8, metadata=_range(2))
    elite_fraction: float = field(default=0.2, metadata=_range(0.0, 1.0))
    mutation_scale: float = field(default=0.05, metadata=_range(0.0))
    # Optuna storage URL; None = SQLite in the run directory (run_dir/study.db)
    storage: str | None = None
    study_name: str | None = None


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: Literal["gan", "supervised"] = "gan"
    gan: GanConfig = field(default_factory=GanConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of the resolved configuration (for provenance)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a YAML config (or start from defaults), apply `a.b=c` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return from_dict(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (numbers, lists...)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, raw, "")


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown config key {_join(where, key)!r}{hint} (valid: {', '.join(fields)})"
        )
    values = {}
    for name, value in raw.items():
        values[name] = _convert(hints[name], value, _join(where, name), fields[name].metadata)
    return cls(**values)


def _convert(tp: Any, value: Any, where: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where, meta)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and "on" in allowed:
            value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        if value not in allowed:
            raise ConfigError(
                f"{where} = {value!r} is not allowed; choose one of: "
                + ", ".join(str(a) for a in allowed)
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_kind(value)}")
        (inner,) = typing.get_args(tp)
        return [_convert(inner, v, f"{where}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {_kind(value)}")
        _, inner = typing.get_args(tp)
        return {k: _convert(inner, v, _join(where, k), {}) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        _check_range(value, where, meta)
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            value = _parse_float(value, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        _check_range(float(value), where, meta)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")  # a bug, not user input


def _parse_float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where} must be a number, got {text!r}") from None


def _check_range(value: float, where: str, meta: typing.Mapping[str, Any]) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{where} = {value} is too small; allowed: >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where} = {value} is too large; allowed: <= {hi}")


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
