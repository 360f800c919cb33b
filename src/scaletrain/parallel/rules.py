"""Parameter-server update rules over flat float32 tensors; no MPI, no models.

A worker trains `sync_every` steps with the task's own optimizer, then sends a *payload*
(`payload`), the master folds it into the central variable (`apply`) and replies with the
central variable, the worker then sets its own parameters from the reply (`merge`). Each
rule decides what travels and how it is folded in:

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


@dataclass
class Easgd:
    alpha: float = 0.5
    name = "easgd"
    reply_before_apply = True

    def payload(self, local: torch.Tensor, pulled: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(local)

    def apply(self, central: torch.Tensor, client: int, payload: torch.Tensor) -> None:
        central.add_(payload - central, alpha=self.alpha)

    def merge(self, local: torch.Tensor, reply: torch.Tensor) -> None:
        local.sub_(local - reply, alpha=self.alpha)


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
    last_scale: float = 0.0  # mean pi of the last update (for logging)

    def payload(self, local: torch.Tensor, pulled: torch.Tensor, out: torch.Tensor) -> None:
        torch.sub(local, pulled, out=out)

    def scale(self, central: torch.Tensor, client: int, update: torch.Tensor) -> torch.Tensor:
        """pi for this update; advances the worker's proxy and remembers the central variable."""
        proxy = self._proxy.get(client)
        if proxy is None:
            proxy = self._proxy[client] = torch.zeros_like(update)
        proxy.mul_(self.momentum).add_(update)
        seen = self._seen.get(client)
        moved = central - seen if seen is not None else torch.zeros_like(central)
        pi = (self.kappa * proxy.abs() - moved.abs()) / (update.abs() + self.eps)
        pi.clamp_(0.0, self.max_scale)
        if seen is None:
            self._seen[client] = central.clone()
        else:
            seen.copy_(central)
        return pi

    def apply(self, central: torch.Tensor, client: int, payload: torch.Tensor) -> None:
        pi = self.scale(central, client, payload)
        self.last_scale = float(pi.mean())
        central.addcmul_(pi, payload)

    def merge(self, local: torch.Tensor, reply: torch.Tensor) -> None:
        local.copy_(reply)

    def forget(self, client: int) -> None:
        self._proxy.pop(client, None)
        self._seen.pop(client, None)


Rule = Downpour | Easgd | Gem


def make_rule(mode: str, *, alpha: float = 0.5, momentum: float = 0.9, kappa: float = 1.0) -> Rule:
    if mode == "downpour":
        return Downpour()
    if mode == "easgd":
        return Easgd(alpha)
    if mode == "gem":
        return Gem(momentum, kappa)
    raise ValueError(f"no parameter-server rule for mode {mode!r}")
