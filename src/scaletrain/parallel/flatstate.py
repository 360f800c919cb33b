"""Every model of a task (both of a GAN) in one flat float32 vector, which a parameter-server
message is: parameters first, then floating buffers, with the modules' tensors rebound as views
into it."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from scaletrain.errors import ConfigError


class _Place(NamedTuple):
    """Where one tensor of a model lives in the flat vector: a parameter (`owner`, key None)
    or a module's buffer (`owner`, buffer name `key`)."""

    owner: Any
    key: str | None
    offset: int
    shape: torch.Size


class FlatState:
    """The models' parameters, then floating buffers, as views into one flat float32 tensor.

    On the CPU a second flat tensor (`spare`, after `add_spare`) can be filled while the models
    train on the first; `move` then points a model's tensors into it (copying its buffers,
    which its forward may just have changed) and `flip` moves the rest and makes it the
    current one."""

    def __init__(self, models: dict[str, nn.Module]) -> None:
        params = [(name, p) for name in sorted(models) for p in models[name].parameters()]
        buffers = [
            (name, module, key, b)
            for name in sorted(models)
            for module in models[name].modules()
            for key, b in module._buffers.items()
            if b is not None and b.is_floating_point()
        ]
        tensors = [p for _, p in params] + [b for *_, b in buffers]
        wrong = {str(t.dtype) for t in tensors if t.dtype != torch.float32}
        if wrong:
            raise ConfigError(f"parameter servers exchange float32 models; found {wrong}")
        self.n_params = sum(p.numel() for _, p in params)
        device = tensors[0].device
        self.flat = torch.cat([t.detach().reshape(-1) for t in tensors]).to(device)
        self._places: dict[str, list[_Place]] = {n: [] for n in models}
        offset = 0
        for name, p in params:
            self._places[name].append(_Place(p, None, offset, p.shape))
            offset += p.numel()
        for name, module, key, b in buffers:
            self._places[name].append(_Place(module, key, offset, b.shape))
            offset += b.numel()
        # each flat tensor's views, per model (made once: a worker rebinds at every step)
        self._views: dict[int, dict[str, list[torch.Tensor]]] = {}
        for name in models:
            self.rebind(name, self.flat, copy_buffers=False)
        self.host = self.flat if device.type == "cpu" else torch.empty_like(self.flat, device="cpu")
        self.spare: torch.Tensor | None = None
        self._moved: set[str] = set()  # models already on the spare

    def add_spare(self) -> None:
        assert self.host is self.flat, "a spare flat tensor is for models on the CPU"
        self.spare = torch.empty_like(self.flat)

    def rebind(self, name: str, into: torch.Tensor, copy_buffers: bool = True) -> None:
        """Point model `name`'s parameters and buffers at their places in `into`."""
        places = zip(self._places[name], self._views_of(into)[name], strict=True)
        for (owner, key, *_), place in places:
            if key is None:
                owner.data = place
                continue
            if copy_buffers:
                place.copy_(owner._buffers[key])
            owner._buffers[key] = place

    def _views_of(self, into: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        views = self._views.get(into.data_ptr())
        if views is None:
            views = self._views[into.data_ptr()] = {
                name: [into[offset : offset + shape.numel()].view(shape)
                       for *_, offset, shape in places]
                for name, places in self._places.items()
            }  # fmt: skip
        return views

    def move(self, name: str) -> None:
        """Model `name` onto the spare (once until the next flip)."""
        assert self.spare is not None
        if name not in self._moved:
            self.rebind(name, self.spare)
            self._moved.add(name)

    def flip(self) -> None:
        """Every model onto the spare, which becomes the current flat tensor."""
        for name in self._places:
            self.move(name)
        self.flat, self.spare = self.spare, self.flat
        self.host = self.flat
        self._moved.clear()

    def to_host(self) -> None:
        if self.host is not self.flat:
            self.host.copy_(self.flat)

    def from_host(self) -> None:
        if self.host is not self.flat:
            self.flat.copy_(self.host)
