"""Keras 3 models (torch backend) as ordinary torch modules for the trainer and strategies.

With KERAS_BACKEND=torch a `keras.Model` already is a `torch.nn.Module`, but three things
differ from what the rest of scaletrain expects:

- `parameters()` also yields Keras' non-trainable variables (batch-norm moving statistics,
  dropout seed states), so optimizers, gradient all-reduce and parameter servers would treat
  them as weights; and `state_dict()` lists every variable twice (model and its functional);
- `module.train()` / `.eval()` do not reach Keras: Dropout and BatchNormalization follow the
  `training=` argument of the call;
- weights are drawn from Keras' own seed generator, not from torch's, and are named after
  layers that Keras numbers per process (`dense`, `dense_1`, ...).

`KerasModule` fixes the first two: trainable variables are its parameters (the very
`torch.nn.Parameter` objects Keras computes with, so optimizer steps and in-place rebinding
by strategies reach Keras), non-trainable ones its buffers (so all-reduce broadcasts them and
parameter servers carry them), and `forward` passes `training=self.training`. `seed_keras`
(called before a builder runs) starts a fresh Keras session seeded from the run's seed.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import torch
from torch import nn

from scaletrain.errors import ConfigError


def prefer_torch_backend() -> None:
    """Before a user's module imports Keras: choose the torch backend unless one was chosen."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")


def seed_keras() -> None:
    """Before a builder runs: Keras' weights drawn from torch's seed (the run's seed).

    Where Keras is imported already, a fresh session (its layer-name counters restart, so a
    model's weights have the same names, its state-dict keys, in every process and build)
    seeded with it. Otherwise Python's `random` is seeded: a Keras first imported by the
    builder draws its default seed from there.
    """
    seed = torch.initial_seed() % 2**31
    keras = sys.modules.get("keras")
    if keras is None:
        random.seed(seed)
    elif _backend(keras) == "torch":
        keras.utils.clear_session()
        keras.utils.set_random_seed(seed)


def is_keras_model(obj: Any) -> bool:
    return any(c.__module__.startswith("keras.") for c in type(obj).__mro__) and hasattr(
        obj, "trainable_variables"
    )


def adapt(name: str, built: Any) -> Any:
    """The builder's result with every Keras model wrapped; other objects pass unchanged."""
    if isinstance(built, dict):
        return {key: _adapt_one(f"{name} ({key})", m) for key, m in built.items()}
    return _adapt_one(name, built)


def _adapt_one(name: str, obj: Any) -> Any:
    if isinstance(obj, KerasModule) or not is_keras_model(obj):
        return obj
    backend = _backend(sys.modules.get("keras"))
    if backend != "torch" or not isinstance(obj, nn.Module):
        raise ConfigError(
            f"model {name!r} is a Keras model of the {backend!r} backend; scaletrain trains "
            "Keras 3 models with the torch backend: set KERAS_BACKEND=torch before keras is "
            "imported"
        )
    if not obj.built or not obj.variables:
        raise ConfigError(
            f"model {name!r}: the Keras model is not built (no weights yet); give it a "
            "keras.Input or call model.build(input_shape) in the builder"
        )
    return KerasModule(obj)


def _backend(keras: Any) -> str:
    try:
        return str(keras.backend.backend())
    except Exception:  # a half-imported or foreign keras module
        return "unknown"


class KerasModule(nn.Module):
    """A built Keras 3 model (torch backend) seen as a plain torch module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # not a submodule: its own registration lists the variables twice, non-trainable
        # ones as parameters; ours lists each once, by Keras path
        object.__setattr__(self, "keras_model", model)
        self._state: list[tuple[str, Any]] = []  # (buffer name, Keras variable)
        taken: set[str] = set()
        for variable in model.variables:
            key = _unique(variable.path.replace("/", "__"), taken)
            value = variable._value
            if variable.trainable:
                self.register_parameter(key, value)
            else:
                self.register_buffer(key, value)
                self._state.append((key, variable))

    def _rebind_state(self) -> None:
        """Point Keras' non-trainable variables at our buffers again, which `.to()`, a
        checkpoint load or a parameter server may have replaced by other tensors."""
        for key, variable in self._state:
            buffer = self._buffers[key]
            value = variable._value
            if value.data_ptr() != buffer.data_ptr() or value.device != buffer.device:
                value.data = buffer

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._rebind_state()
        kwargs.setdefault("training", self.training)
        import keras

        first = next(iter(self._parameters.values()), None)
        device = first.device if first is not None else next(iter(self._buffers.values())).device

        # tensors Keras creates inside the call go where the weights are
        with keras.device(_keras_device(device)):
            return self.keras_model(*args, **kwargs)

    def extra_repr(self) -> str:
        model = self.keras_model
        return f"keras {type(model).__name__} {model.name!r}"


def _keras_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return device.type


def _unique(key: str, taken: set[str]) -> str:
    out, i = key, 1
    while out in taken:
        out, i = f"{key}_{i}", i + 1
    taken.add(out)
    return out
