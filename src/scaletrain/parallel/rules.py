"""Parameter-server update rules over flat float32 tensors; no MPI, no models.

A worker trains `sync_every` steps with the task's own optimizer, then sends its parameters;
the master folds them into the central variable and writes the reply (`apply`), the worker
then sets its own parameters from the reply (`merge`). A worker that trained on while its
message travelled (parallel.overlap) instead adds a correction to its parameters, computed
from the reply and the parameters it sent (`fold`), which keeps the steps it took meanwhile.

The master keeps each worker's last reply (it has to, to send it), so the worker's update
since its last pull is (what it sent) - (that reply), worked out on the master: a worker
sends its parameters as they are, and its exchange makes three passes over them fewer than
if it computed and sent the difference. Each rule decides how they are folded in:

- Downpour (Dean et al. 2012): the master adds the worker's update as it arrives (plain
  addition: the worker's optimizer already shaped it, so any optimizer works on the workers
  and the master needs no optimizer state), or steps the centre with an optimizer of its
  own, the update negated as the gradient (parallel.master_optim); the worker continues from
  the fresh central variable.
- EASGD (Zhang, Choromanska, LeCun 2015, asynchronous variant): with the worker's parameters
  x and the centre c as it was when they arrived, both move towards each other,
  c += alpha (x - c) and x -= alpha (x - c). The master replies with c *before* its move, so
  the two sides use the same difference.
- GEM (Hermans & Louppe 2018, arXiv:1805.08469): the update u is rescaled element-wise by
  pi = clip((kappa |m| - |dc|) / |u|, 0, 5) before it is added, where m is a momentum-SGD
  proxy of that worker (m <- mu m + u) and dc the change of the central variable since the
  worker's previous exchange (its own last update and everybody else's). The central
  variable's kinetic energy then matches the proxy's, whatever the number of workers or
  their staleness. As in the authors' code, pi is clipped to [0, 5] for stability; unlike
  it, the rescaling happens on the master, which keeps the per-worker proxies.

A rule's state (GEM's proxies, the master optimizer's) goes into the master's checkpoints
(`state_dict`, `load_state_dict`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from scaletrain.config import ParallelConfig


@dataclass
class Downpour:
    # parallel.master_optim: the master's own optimizer, made from the central parameters
    # (None: updates are added as they come)
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None
    name = "downpour"
    _scratch: torch.Tensor | None = field(default=None, repr=False)
    _stepper: torch.optim.Optimizer | None = field(default=None, repr=False)
    _resumed: dict[str, Any] | None = field(default=None, repr=False)  # for the stepper

    def apply(
        self, central: torch.Tensor, client: int, sent: torch.Tensor, reply: torch.Tensor
    ) -> None:
        """central += sent - reply (the client's update since it got `reply`); reply = the
        new central. Block by block, so that each block of the update is still in the
        cache when it is added and the new centre when it is copied."""
        if self.optimizer is not None:
            return self._step(central, sent, reply)
        scratch = self._scratch = _room(self._scratch, BLOCK)
        for lo in range(0, central.numel(), BLOCK):
            part = slice(lo, lo + BLOCK)
            update = scratch[: central[part].numel()]
            torch.sub(sent[part], reply[part], out=update)
            central[part].add_(update)
            reply[part].copy_(central[part])

    def _step(self, central: torch.Tensor, sent: torch.Tensor, reply: torch.Tensor) -> None:
        """The master's optimizer steps the centre with the client's update, negated, as its
        gradient (Dean et al.'s Downpour: workers send, the master's optimizer applies; with
        SGD at lr 1 and no momentum this is the plain addition)."""
        if self._stepper is None:  # the optimizer keeps this view of the master's vector
            self._stepper = self.optimizer([central])
            central.grad = torch.empty_like(central)
            if self._resumed is not None:
                self._stepper.load_state_dict(self._resumed)
        (param,) = self._stepper.param_groups[0]["params"]
        assert param.data_ptr() == central.data_ptr() and param.shape == central.shape
        torch.sub(reply, sent, out=param.grad)
        self._stepper.step()
        reply.copy_(central)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the rule: the master optimizer's state."""
        if self._stepper is not None:
            return {"optimizer": self._stepper.state_dict()}
        return {"optimizer": self._resumed} if self._resumed is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resumed = state.get("optimizer")  # loaded when the optimizer is made

    def merge(self, local: torch.Tensor, reply: torch.Tensor) -> None:
        local.copy_(reply)

    def fold(
        self, local: torch.Tensor, reply: torch.Tensor, sent: torch.Tensor, out: torch.Tensor
    ) -> None:
        """out = local + (reply - sent): the centre plus what was trained since sending.
        `out` may be `local` or `sent` (the first operation reads both before it writes)."""
        torch.sub(local, sent, out=out).add_(reply)


@dataclass
class Easgd:
    alpha: float = 0.5
    name = "easgd"

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def apply(
        self, central: torch.Tensor, client: int, sent: torch.Tensor, reply: torch.Tensor
    ) -> None:
        reply.copy_(central)  # the centre before its move
        central.lerp_(sent, self.alpha)  # c + alpha (x - c), no temporary

    def merge(self, local: torch.Tensor, reply: torch.Tensor) -> None:
        local.lerp_(reply, self.alpha)  # x - alpha (x - c)

    def fold(
        self, local: torch.Tensor, reply: torch.Tensor, sent: torch.Tensor, out: torch.Tensor
    ) -> None:
        """out = local + alpha (reply - sent): the elastic pull, with the difference the
        master saw (sent - centre). `out` may be `local` or `sent`."""
        torch.sub(local, sent, alpha=self.alpha, out=out).add_(reply, alpha=self.alpha)


@dataclass
class Gem:
    momentum: float = 0.9
    kappa: float = 1.0
    max_scale: float = 5.0
    eps: float = 1e-12
    name = "gem"
    _proxy: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    _seen: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    # scratch vectors (_room): the update, pi and a temporary
    _update: torch.Tensor | None = field(default=None, repr=False)
    _pi: torch.Tensor | None = field(default=None, repr=False)
    _tmp: torch.Tensor | None = field(default=None, repr=False)
    _fused: Callable[..., torch.Tensor] | None = field(default=None, repr=False)
    _mean: torch.Tensor | None = field(default=None, repr=False)  # of the last fused pi

    def fuse(self, size: int) -> Exception | None:
        """Run `apply` as one compiled loop over the parameters (`gem_update` under
        torch.compile: on the CPU it needs a C++ compiler), compiled now and checked against
        the uncompiled expressions on random vectors of `size`. Where compiling fails or the
        two disagree, the error (and the plain rule stays).

        First for the vector instructions the CPU lists, without inductor's check that the
        compiler builds and loads them (a test program per instruction set, loaded by a new
        Python process: 6 of the 11 s that compiling took on 2 cores, empty cache); only if
        that fails, again with the check, which then picks instructions the compiler builds."""
        import torch._dynamo
        import torch._inductor.config as inductor_config

        if inductor_config.cpp.vec_isa_ok is None:  # not set by the user (its variable)
            failed = self._compile(size, {"cpp.vec_isa_ok": True})
            _forget_vec_isa()  # later compiles in this process check as usual
            if failed is None:
                return None
            torch._dynamo.reset()
        return self._compile(size, {})

    def _compile(self, size: int, settings: dict[str, object]) -> Exception | None:
        """`fuse` once, with these inductor settings."""
        import torch._inductor.config as inductor_config

        fused = torch.compile(gem_update, dynamic=False)
        # two updates of random vectors, compiled and not: a miscompiled loop is not used
        generator = torch.Generator().manual_seed(0)
        start = [torch.randn(size, generator=generator) for _ in range(5)]
        args = (self.momentum, self.kappa, self.max_scale, self.eps)
        runs = []
        for fn in (gem_update, fused):
            central, proxy, seen, sent, reply = vectors = [t.clone() for t in start]
            try:
                # one small loop: no pool of compiling processes (by default one per core,
                # each importing torch: 65 s against 54 s on a 16-core host, empty cache)
                with inductor_config.patch({"compile_threads": 1, **settings}):
                    for _ in range(2):
                        fn(central, proxy, seen, sent, reply, *args)
                        sent.add_(reply, alpha=0.5)  # the worker trained on from the reply
            except Exception as exc:  # no compiler, an unsupported platform
                return exc
            runs.append(vectors)
        for plain, compiled in zip(*runs, strict=True):
            if not torch.allclose(plain, compiled, rtol=1e-4, atol=1e-5):
                return RuntimeError("the compiled update disagrees with the plain one")
        self._fused = fused
        return None

    def scale(self, central: torch.Tensor, client: int, update: torch.Tensor) -> torch.Tensor:
        """pi for this update; advances the worker's proxy and remembers the central variable.

        In place, in two scratch vectors: the master runs this for every update it receives,
        and fresh temporaries of the model's size cost more than the arithmetic."""
        proxy, seen = self._state(central, client)
        n = update.numel()
        pi = self._pi = _room(self._pi, n)
        tmp = self._tmp = _room(self._tmp, n)
        torch.add(update, proxy, alpha=self.momentum, out=proxy)  # m <- mu m + u
        torch.sub(central, seen, out=tmp).abs_()  # |dc|
        torch.abs(proxy, out=pi).mul_(self.kappa).sub_(tmp)  # kappa |m| - |dc|
        torch.abs(update, out=tmp).add_(self.eps)
        pi.div_(tmp).clamp_(0.0, self.max_scale)
        seen.copy_(central)
        return pi

    def _state(self, central: torch.Tensor, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The worker's proxy and the centre as it last saw it (made at its first update)."""
        proxy = self._proxy.get(client)
        if proxy is None:
            proxy = self._proxy[client] = torch.zeros_like(central)
            self._seen[client] = central.clone()  # the centre has not moved for it yet
        return proxy, self._seen[client]

    def apply(
        self, central: torch.Tensor, client: int, sent: torch.Tensor, reply: torch.Tensor
    ) -> None:
        if self._fused is not None:
            proxy, seen = self._state(central, client)
            m, k, top = self.momentum, self.kappa, self.max_scale
            self._mean = self._fused(central, proxy, seen, sent, reply, m, k, top, self.eps)
            return
        update = self._update = _room(self._update, central.numel())
        torch.sub(sent, reply, out=update)
        central.addcmul_(self.scale(central, client, update), update)
        reply.copy_(central)

    @property
    def last_scale(self) -> float:
        """Mean pi of the last update (for logging; computed when asked, not per update)."""
        if self._mean is not None:
            return float(self._mean)
        return float(self._pi.mean()) if self._pi is not None else 0.0

    merge = Downpour.merge
    fold = Downpour.fold

    def forget(self, client: int) -> None:
        self._proxy.pop(client, None)
        self._seen.pop(client, None)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the rule: each worker's proxy and centre last seen."""
        return {"proxy": dict(self._proxy), "seen": dict(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # on the host, where the master's central vector is
        self._proxy = {int(c): t.cpu().clone() for c, t in state.get("proxy", {}).items()}
        self._seen = {int(c): t.cpu().clone() for c, t in state.get("seen", {}).items()}


def gem_update(
    central: torch.Tensor,
    proxy: torch.Tensor,
    seen: torch.Tensor,
    sent: torch.Tensor,
    reply: torch.Tensor,
    momentum: float,
    kappa: float,
    max_scale: float,
    eps: float,
) -> torch.Tensor:
    """Gem.apply written as expressions, which torch.compile fuses into one loop (9 reads and
    writes of the parameters instead of the plain rule's 35); returns the mean pi."""
    update = sent - reply
    torch.add(update, proxy, alpha=momentum, out=proxy)
    pi = (kappa * proxy.abs() - (central - seen).abs()) / (update.abs() + eps)
    pi = pi.clamp(0.0, max_scale)
    # "+ 0.0": a computed value; compiled, a plain copy of the input read it only after
    # the line below had overwritten it (torch 2.13, CPU; the equivalence test catches it)
    seen.copy_(central + 0.0)
    central.addcmul_(pi, update)
    reply.copy_(central)
    return pi.mean()


# Downpour's update is worked on in blocks of this many floats (256 KiB), which stay in a
# core's cache between one operation and the next (530k parameters, one core: 0.39 ms per
# update against 0.54 ms over the whole vector at once)
BLOCK = 1 << 16


def refill(
    rule: Rule | None,
    local: torch.Tensor,
    reply: torch.Tensor,
    sent: torch.Tensor,
    spare: torch.Tensor,
    n: int,
) -> None:
    """A worker's next payload and the weights it trains on from its next optimizer step:
    `sent[:n]` and `spare[:n]` <- `local` plus the correction of `reply` (`rule.fold`;
    `sent` still holds what was sent with it), or `local` as it is (no rule). Block by
    block: each block of `sent` is still in the cache when `spare` is written from it (5
    reads and writes of the parameters instead of 8)."""
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        part_local, part_sent = local[lo:hi], sent[lo:hi]
        if rule is not None:
            rule.fold(part_local, reply[lo:hi], part_sent, out=part_sent)
        else:
            part_sent.copy_(part_local)
        spare[lo:hi].copy_(part_sent)


def _forget_vec_isa() -> None:
    """Drop inductor's list of usable vector instruction sets, cached for the process when it
    was first needed (by Gem.fuse, unchecked), so that the next compile checks them."""
    from torch._inductor import cpu_vec_isa

    clear = getattr(cpu_vec_isa.valid_vec_isa_list, "cache_clear", None)
    if clear is not None:
        clear()


def _room(scratch: torch.Tensor | None, size: int) -> torch.Tensor:
    """The first `size` floats of `scratch` if it holds them, else a new vector of `size`."""
    return scratch[:size] if scratch is not None and scratch.numel() >= size else torch.empty(size)


Rule = Downpour | Easgd | Gem


def make_rule(cfg: ParallelConfig) -> Rule:
    """The rule of parallel.mode with its settings (downpour's master optimizer made like the
    task's, parallel.master_optim)."""
    if cfg.mode == "downpour":
        optimizer = None
        if cfg.master_optim is not None:
            from scaletrain.tasks.base import make_optimizer

            # fused: a master Adam's step over 530k parameters, one core: 0.8 against 1.6 ms
            optimizer = partial(make_optimizer, cfg.master_optim, fused=True)
        return Downpour(optimizer)
    if cfg.mode == "easgd":
        return Easgd(cfg.easgd_alpha)
    if cfg.mode == "gem":
        return Gem(cfg.gem_momentum, cfg.gem_kappa)
    raise ValueError(f"no parameter-server rule for mode {cfg.mode!r}")


def exchange_period(cfg: ParallelConfig) -> int:
    """A worker's steps between exchanges: parallel.easgd_tau for EASGD, else sync_every."""
    return cfg.easgd_tau if cfg.mode == "easgd" else cfg.sync_every
