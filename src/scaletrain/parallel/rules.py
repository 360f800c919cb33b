"""Parameter-server update rules over flat float32 tensors; no MPI, no models.

A worker trains `sync_every` steps with the task's own optimizer, then sends a *payload*
(`payload`), the master folds it into the central variable (`apply`) and replies with the
central variable, the worker then sets its own parameters from the reply (`merge`). A worker that
trained on while its message travelled (parallel.overlap) instead adds a `correction` to its
parameters, computed from the reply and the parameters it sent, which keeps the steps it took
meanwhile. Each rule decides what travels and how it is folded in:

- Downpour (Dean et al. 2012): the payload is the worker's update since its last pull; the
  master adds it as it arrives (plain addition: the worker's optimizer already shaped it, so
  any optimizer works on the workers and the master needs no optimizer state); the worker
  continues from the fresh central variable.
- EASGD (Zhang, Choromanska, LeCun 2015, asynchronous variant): the payload is the worker's
  parameters x; with the centre c as it was when the message arrived, both move towards each
  other, c += alpha (x - c) and x -= alpha (x - c). The master replies with c *before* its
  move, so the two sides use the same difference.
- GEM (Hermans & Louppe 2018, arXiv:1805.08469): the update u is rescaled element-wise by
  pi = clip((kappa |m| - |dc|) / |u|, 0, 5) before it is added, where m is a momentum-SGD
  proxy of that worker (m <- mu m + u) and dc the change of the central variable since the
  worker's previous exchange (its own last update and everybody else's). The central
  variable's kinetic energy then matches the proxy's, whatever the number of workers or
  their staleness. As in the authors' code, pi is clipped to [0, 5] for stability; unlike
  it, the rescaling happens on the master, which keeps the per-worker proxies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class Downpour:
    name = "downpour"
    reply_before_apply = False

    def payload(self, local: torch.Tensor, pulled: torch.Tensor, out: torch.Tensor) -> None:
        torch.sub(local, pulled, out=out)

    def apply(self, central: torch.Tensor, client: int, payload: torch.Tensor) -> None:
        central.add_(payload)

    def merge(self, local: torch.Tensor, reply: torch.Tensor) -> None:
        local.copy_(reply)

    def correction(self, reply: torch.Tensor, sent: torch.Tensor, out: torch.Tensor) -> None:
        # local + (reply - sent): the centre plus what was trained since sending
        torch.sub(reply, sent, out=out)


@dataclass
class Easgd:
    alpha: float = 0.5
    name = "easgd"
    reply_before_apply = True

    def payload(self, local: torch.Tensor, pulled: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(local)

    def apply(self, central: torch.Tensor, client: int, payload: torch.Tensor) -> None:
        central.lerp_(payload, self.alpha)  # c + alpha (x - c), no temporary

    def merge(self, local: torch.Tensor, reply: torch.Tensor) -> None:
        local.lerp_(reply, self.alpha)  # x - alpha (x - c)

    def correction(self, reply: torch.Tensor, sent: torch.Tensor, out: torch.Tensor) -> None:
        # the elastic pull, with the difference the master saw (sent - centre)
        torch.sub(reply, sent, out=out).mul_(self.alpha)


@dataclass
class Gem:
    momentum: float = 0.9
    kappa: float = 1.0
    max_scale: float = 5.0
    eps: float = 1e-12
    name = "gem"
    reply_before_apply = False
    _proxy: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _seen: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _scratch: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _fused: Callable[..., torch.Tensor] | None = field(default=None, repr=False)
    _mean: torch.Tensor | None = field(default=None, repr=False)  # of the last fused pi

    def fuse(self, size: int) -> Exception | None:
        """Run `apply` as one compiled loop over the parameters (`gem_update` under
        torch.compile: on the CPU it needs a C++ compiler), compiled now and checked against
        the uncompiled expressions on random vectors of `size`. Where compiling fails or the
        two disagree, the error (and the plain rule stays)."""
        fused = torch.compile(gem_update, dynamic=False)
        # two updates of random vectors, compiled and not: a miscompiled loop is not used
        generator = torch.Generator().manual_seed(0)
        start = [torch.randn(size, generator=generator) for _ in range(4)]
        args = (self.momentum, self.kappa, self.max_scale, self.eps)
        runs = []
        for fn in (gem_update, fused):
            central, proxy, seen, update = (t.clone() for t in start)
            try:
                for _ in range(2):
                    fn(central, proxy, seen, update, *args)
            except Exception as exc:  # no compiler, an unsupported platform
                return exc
            runs.append((central, proxy, seen))
        for plain, compiled in zip(*runs, strict=True):
            if not torch.allclose(plain, compiled, rtol=1e-4, atol=1e-5):
                return RuntimeError("the compiled update disagrees with the plain one")
        self._fused = fused
        return None

    def payload(self, local: torch.Tensor, pulled: torch.Tensor, out: torch.Tensor) -> None:
        torch.sub(local, pulled, out=out)

    def scale(self, central: torch.Tensor, client: int, update: torch.Tensor) -> torch.Tensor:
        """pi for this update; advances the worker's proxy and remembers the central variable.

        In place, in two scratch vectors: the master runs this for every update it receives,
        and fresh temporaries of the model's size cost more than the arithmetic."""
        proxy, seen = self._state(central, client, update)
        if self._scratch is None or self._scratch[0].shape != update.shape:
            self._scratch = (torch.empty_like(update), torch.empty_like(update))
        pi, tmp = self._scratch
        torch.add(update, proxy, alpha=self.momentum, out=proxy)  # m <- mu m + u
        torch.sub(central, seen, out=tmp).abs_()  # |dc|
        torch.abs(proxy, out=pi).mul_(self.kappa).sub_(tmp)  # kappa |m| - |dc|
        torch.abs(update, out=tmp).add_(self.eps)
        pi.div_(tmp).clamp_(0.0, self.max_scale)
        seen.copy_(central)
        return pi

    def _state(
        self, central: torch.Tensor, client: int, update: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The worker's proxy and the centre as it last saw it (made at its first update)."""
        proxy = self._proxy.get(client)
        if proxy is None:
            proxy = self._proxy[client] = torch.zeros_like(update)
            self._seen[client] = central.clone()  # the centre has not moved for it yet
        return proxy, self._seen[client]

    def apply(self, central: torch.Tensor, client: int, payload: torch.Tensor) -> None:
        if self._fused is None:
            central.addcmul_(self.scale(central, client, payload), payload)
            return
        proxy, seen = self._state(central, client, payload)
        m, k, top = self.momentum, self.kappa, self.max_scale
        self._mean = self._fused(central, proxy, seen, payload, m, k, top, self.eps)

    @property
    def last_scale(self) -> float:
        """Mean pi of the last update (for logging; computed when asked, not per update)."""
        if self._mean is not None:
            return float(self._mean)
        return float(self._scratch[0].mean()) if self._scratch is not None else 0.0

    merge = Downpour.merge
    correction = Downpour.correction

    def forget(self, client: int) -> None:
        self._proxy.pop(client, None)
        self._seen.pop(client, None)


def gem_update(
    central: torch.Tensor,
    proxy: torch.Tensor,
    seen: torch.Tensor,
    update: torch.Tensor,
    momentum: float,
    kappa: float,
    max_scale: float,
    eps: float,
) -> torch.Tensor:
    """Gem.apply written as expressions, which torch.compile fuses into one loop (7 reads and
    writes of the parameters instead of the plain rule's 30); returns the mean pi."""
    torch.add(update, proxy, alpha=momentum, out=proxy)
    pi = (kappa * proxy.abs() - (central - seen).abs()) / (update.abs() + eps)
    pi = pi.clamp(0.0, max_scale)
    # "+ 0.0": a computed value; compiled, a plain copy of the input read it only after
    # the line below had overwritten it (torch 2.13, CPU; the equivalence test catches it)
    seen.copy_(central + 0.0)
    central.addcmul_(pi, update)
    return pi.mean()


Rule = Downpour | Easgd | Gem


def make_rule(mode: str, *, alpha: float = 0.5, momentum: float = 0.9, kappa: float = 1.0) -> Rule:
    if mode == "downpour":
        return Downpour()
    if mode == "easgd":
        return Easgd(alpha)
    if mode == "gem":
        return Gem(momentum, kappa)
    raise ValueError(f"no parameter-server rule for mode {mode!r}")
