"""The pipeline stages' messages: tensors between stages over torch.distributed, each message
with a small header saying what it holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from scaletrain.errors import ConfigError, TrainingError

# ---------------------------------------------------------------------------- messages

_DTYPES = (
    torch.float32, torch.float64, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
)  # fmt: skip
_MAX_TENSORS, _MAX_DIMS = 8, 8
_FIELDS = 3 + _MAX_DIMS  # dtype code (-1: no tensor), requires_grad, ndim, dims
_HEADER = 3 + _MAX_TENSORS * _FIELDS  # call, kind, count, tensors
FORWARD_TAG, BACKWARD_TAG = 11, 12


@dataclass
class _Meta:
    dtype: torch.dtype | None
    requires_grad: bool
    shape: tuple[int, ...]


class Links:
    """Tensors between the stages over torch.distributed (Gloo on CPU, NCCL on GPU). Every
    message starts with a small int64 header (the model call it belongs to, then dtype and
    shape of each tensor), so the receiver needs no prior knowledge of activation shapes.

    `wire` is where tensors travel from: the device itself, or the host when GPU tensors go
    over Gloo (several stages sharing one GPU: Gloo's point-to-point calls take host memory
    only)."""

    def __init__(
        self,
        rank: int,
        size: int,
        device: torch.device,
        timeout_s: float = 60.0,
        wire: torch.device | None = None,
    ) -> None:
        self.rank, self.size, self.device, self.timeout_s = rank, size, device, timeout_s
        self.wire = wire or device

    def _arrived(self, buf: torch.Tensor) -> torch.Tensor:
        return buf if self.wire == self.device else buf.to(self.device)

    @contextmanager
    def _waiting(self, what: str, peer: int) -> Iterator[None]:
        """A peer that died or hung surfaces here (Gloo / NCCL time out): one clear line."""
        try:
            yield
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise TrainingError(
                f"pipeline stage {self.rank}: {what} rank {peer} failed within "
                f"{self.timeout_s:g} s (parallel.timeout_s); it died or hung ({first})"
            ) from None

    def _header(self, call: int, kind: int, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        if len(tensors) > _MAX_TENSORS:
            raise ConfigError(
                f"parallel.mode pipeline: a stage passes {len(tensors)} tensors; at most "
                f"{_MAX_TENSORS} can cross a stage boundary"
            )
        h = [call, kind, len(tensors)]
        for t in tensors:
            if t is None:
                h += [-1, 0, 0] + [0] * _MAX_DIMS
                continue
            if t.dtype not in _DTYPES or t.dim() > _MAX_DIMS:
                raise ConfigError(
                    f"parallel.mode pipeline: cannot pass a {t.dtype} tensor of shape "
                    f"{tuple(t.shape)} between stages"
                )
            dims = list(t.shape) + [0] * (_MAX_DIMS - t.dim())
            h += [_DTYPES.index(t.dtype), int(t.requires_grad), t.dim(), *dims]
        h += [0] * (_HEADER - len(h))
        return torch.tensor(h, dtype=torch.int64, device=self.wire)

    @staticmethod
    def _parse(header: torch.Tensor) -> tuple[int, int, list[_Meta]]:
        h = header.tolist()
        metas = []
        for i in range(h[2]):
            f = h[3 + i * _FIELDS : 3 + (i + 1) * _FIELDS]
            dtype = None if f[0] < 0 else _DTYPES[f[0]]
            metas.append(_Meta(dtype, bool(f[1]), tuple(f[3 : 3 + f[2]])))
        return h[0], h[1], metas

    def _check(self, got: int, call: int, peer: int) -> None:
        if got != call:
            raise TrainingError(
                f"pipeline stage {self.rank}: rank {peer} sent data of model call {got} while "
                f"this rank is at call {call}; the processes ran different model calls"
            )

    def send(
        self, call: int, kind: int, tensors: list[torch.Tensor | None], dst: int, tag: int
    ) -> list[Any]:
        """Start sending; returns what to wait on (the tensors stay referenced until then)."""
        import torch.distributed as dist

        header = self._header(call, kind, tensors)
        pending: list[Any] = [header, dist.isend(header, dst, tag=tag)]
        for t in tensors:
            if t is not None:
                t = t.detach().to(self.wire).contiguous()
                pending += [t, dist.isend(t, dst, tag=tag)]
        return pending

    def recv(
        self, call: int, src: int, tag: int
    ) -> tuple[int, list[torch.Tensor | None], list[bool]]:
        """(kind, tensors, requires_grad flags) of the next message from `src`."""
        import torch.distributed as dist

        header = torch.empty(_HEADER, dtype=torch.int64, device=self.wire)
        with self._waiting("receiving from", src):
            dist.recv(header, src, tag=tag)
        got, kind, metas = self._parse(header)
        self._check(got, call, src)
        tensors: list[torch.Tensor | None] = []
        for meta in metas:
            if meta.dtype is None:
                tensors.append(None)
                continue
            buf = torch.empty(meta.shape, dtype=meta.dtype, device=self.wire)
            with self._waiting("receiving from", src):
                dist.recv(buf, src, tag=tag)
            tensors.append(self._arrived(buf))
        return kind, tensors, [m.requires_grad for m in metas]

    def broadcast(
        self, call: int, tensors: list[torch.Tensor] | None, spec_text: str | None, src: int
    ) -> tuple[list[torch.Tensor], str | None]:
        """The source's tensors on every rank, with their pytree structure (serialized) when
        the source passes one (only when it changed: it costs a pickled broadcast)."""
        import torch.distributed as dist

        mine = self.rank == src
        if mine:
            header = self._header(call, int(spec_text is not None), list(tensors or []))
        else:
            header = torch.empty(_HEADER, dtype=torch.int64, device=self.wire)
        with self._waiting("the broadcast from", src):
            dist.broadcast(header, src)
        got, changed, metas = self._parse(header)
        self._check(got, call, src)
        if changed:
            box = [spec_text]
            dist.broadcast_object_list(box, src, device=self.wire)
            spec_text = box[0]
        out = []
        for i, meta in enumerate(metas):
            if mine and tensors is not None:
                out.append(tensors[i].contiguous())
                buf = out[-1].to(self.wire)
            else:
                buf = torch.empty(meta.shape, dtype=meta.dtype, device=self.wire)
            with self._waiting("the broadcast from", src):
                dist.broadcast(buf, src)
            if not mine or tensors is None:
                out.append(self._arrived(buf))
        return out, spec_text if changed else None

    def broadcast_like(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        import torch.distributed as dist

        buf = tensor.to(self.wire)
        with self._waiting("the broadcast from", src):
            dist.broadcast(buf, src)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def wait(self, pending: list[Any], peer: int) -> None:
        with self._waiting("sending to", peer):
            for item in pending:
                if not isinstance(item, torch.Tensor) and item is not None:
                    item.wait()
