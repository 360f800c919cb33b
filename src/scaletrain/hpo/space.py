"""The search space: `search.params` (dotted config keys) as Optuna distributions.

Every key must name a real config key (a key under `model.args` may be any name, the model
builder receives it); every bound and choice must make a valid config, checked once, before
any trial runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from scaletrain.config import Config, ParamSpec, from_dict
from scaletrain.errors import ConfigError

# sections whose keys are free-form (passed through to the model builder)
_OPEN_KEYS = ("model.args",)


def distributions(cfg: Config, raw: dict[str, Any]) -> dict[str, BaseDistribution]:
    """Optuna distributions of `cfg.search.params`, validated against the config tree."""
    params = cfg.search.params
    if not params:
        raise ConfigError("search.params is empty: name at least one config key to optimize")
    out = {}
    for key, spec in params.items():
        check_key(key)
        out[key] = _distribution(key, spec)
        for value in _corners(out[key]):
            try:
                from_dict(with_params(raw, {key: value}))
            except ConfigError as exc:
                raise ConfigError(
                    f"search.params.{key}: value {value!r} is invalid: {exc}"
                ) from None
    return out


def check_key(key: str) -> None:
    """ConfigError naming `key` (and the closest valid keys) unless it is a config key."""
    if any(key.startswith(prefix + ".") and len(key) > len(prefix) + 1 for prefix in _OPEN_KEYS):
        return
    node: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        if part not in hints:
            where = ".".join(parts[:i])
            valid = [f"{where}.{h}" if where else h for h in hints]
            close = difflib.get_close_matches(key, _all_keys(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"search.params: {key!r} is not a config key{hint}"
                + ("" if close or not valid else f" (valid under {where or 'the top'}: "
                   f"{', '.join(valid)})")
            )  # fmt: skip
        node = hints[part]
    if dataclasses.is_dataclass(node) or parts[0] == "search":
        raise ConfigError(f"search.params: {key!r} is a section, not a value to optimize")


def with_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config dict with each dotted key set to its value."""
    out = copy.deepcopy(raw)
    for key, value in params.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def _distribution(key: str, spec: ParamSpec) -> BaseDistribution:
    where = f"search.params.{key}"
    if spec.type == "categorical":
        if not spec.choices:
            raise ConfigError(f"{where}: a categorical parameter needs choices: [...]")
        odd = [
            c for c in spec.choices if c is not None and not isinstance(c, (bool, int, float, str))
        ]
        if odd:
            raise ConfigError(
                f"{where}: choices must be numbers, strings, booleans or null, not {odd[0]!r}"
            )
        return CategoricalDistribution(spec.choices)
    if spec.choices:
        raise ConfigError(f"{where}: choices are for type: categorical, not {spec.type}")
    if spec.low is None or spec.high is None:
        raise ConfigError(f"{where}: a {spec.type} parameter needs low and high")
    if not spec.low < spec.high:
        raise ConfigError(f"{where}: low ({spec.low}) must be below high ({spec.high})")
    if spec.log and spec.low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {spec.low}")
    if spec.type == "int":
        if spec.low != int(spec.low) or spec.high != int(spec.high):
            raise ConfigError(f"{where}: an int parameter needs integer low and high")
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log)
    return FloatDistribution(spec.low, spec.high, log=spec.log)


def _corners(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    return [dist.low, dist.high]


def _all_keys(node: Any = Config, prefix: str = "") -> list[str]:
    out = []
    for name, tp in typing.get_type_hints(node).items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            out += _all_keys(tp, key + ".")
        else:
            out.append(key)
    return out
