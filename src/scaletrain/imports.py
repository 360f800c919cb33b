"""User code named in the config by import path: `package.module:name` (name may be dotted).

Every failure is a one-line ConfigError naming the config key: the module cannot be
imported, it has no such callable, or the callable's signature cannot take the call that
scaletrain will make.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from scaletrain.errors import ConfigError


def import_callable(spec: str, key: str) -> Callable[..., Any]:
    """The callable `package.module:name`; `key` is the config key that named it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key} = {spec!r} must look like package.module:function")
    from scaletrain.models.keras_adapter import prefer_torch_backend

    prefer_torch_backend()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key} = {spec!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(
            f"{key} = {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None or not callable(obj):
        raise ConfigError(f"{key} = {spec!r}: {module_name!r} has no callable {attr!r}")
    return obj


def check_call(fn: Callable[..., Any], key: str, spec: str, args: int, kwargs=(), wants=""):
    """Raise ConfigError unless `fn` accepts `args` positional arguments and `kwargs`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C functions: trust them
        return
    try:
        signature.bind(*([None] * args), **dict.fromkeys(kwargs))
    except TypeError as exc:
        wanted = f" {wants}" if wants else ""
        raise ConfigError(
            f"{key} = {spec!r} must accept{wanted}; its signature is {signature} ({exc})"
        ) from None
