"""Model registry: built-in names, or a user's `package.module:builder`.

A builder returns either one nn.Module (stored under "model") or a dict of named modules
(a GAN returns {"generator", "discriminator"}).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from scaletrain.errors import ConfigError
from scaletrain.models import keras_adapter
from scaletrain.models.calo_cnn import build_calo_cnn
from scaletrain.models.small import build_mlp, build_tiny_3dgan
from scaletrain.models.threedgan import build_3dgan

Builder = Callable[..., "nn.Module | dict[str, nn.Module]"]

MODELS: dict[str, Builder] = {
    "3dgan": build_3dgan,
    "tiny-3dgan": build_tiny_3dgan,
    "calo-cnn": build_calo_cnn,
    "mlp": build_mlp,
}


def resolve_builder(name: str) -> Builder:
    """A registered name, or `package.module:function` importable from the Python path."""
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ConfigError(
            f"unknown model {name!r}; built-in: {', '.join(MODELS)}, or package.module:builder"
        )
    module_name, _, attr = name.partition(":")
    keras_adapter.prefer_torch_backend()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model {name!r}: cannot import {module_name!r} ({exc})") from None
    builder = getattr(module, attr, None)
    if builder is None or not callable(builder):
        raise ConfigError(f"model {name!r}: {module_name!r} has no callable {attr!r}")
    return builder


def build_models(name: str, args: dict[str, Any] | None = None) -> dict[str, nn.Module]:
    """Build the named model(s) with keyword arguments checked against the builder."""
    builder = resolve_builder(name)
    args = dict(args or {})
    _check_arguments(name, builder, args)
    keras_adapter.seed_keras()
    # Keras 3 models (torch backend) become torch modules with Keras' training flag
    built = keras_adapter.adapt(name, builder(**args))
    if isinstance(built, nn.Module):
        built = {"model": built}
    if (
        not isinstance(built, dict)
        or not built
        or not all(isinstance(m, nn.Module) for m in built.values())
    ):
        raise ConfigError(
            f"model {name!r}: the builder must return a torch.nn.Module or a dict of them, "
            f"got {type(built).__name__}"
        )
    return built


def _check_arguments(name: str, builder: Builder, args: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in args:
        if key not in params:
            raise ConfigError(
                f"model.args.{key} is not an argument of {name!r}; valid: {', '.join(params)}"
            )
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in args
    ]
    if missing:
        raise ConfigError(f"model {name!r} needs model.args: {', '.join(missing)}")
