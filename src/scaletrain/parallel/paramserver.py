"""Asynchronous parameter servers (downpour, easgd, gem): the MPI message loop.

Every model of the task (both of a GAN) lives in one flat float32 vector: parameters first,
then floating buffers, with the modules' tensors rebound as views into it, so a message is
that vector's memory, sent with non-blocking Isend/Irecv (no pickling). One exchange:

    worker -> server   header [kind, step, spent, elapsed] (int64), payload (float32): its
                       parameters and buffers as they are
    server -> worker   reply (float32): the central variable

The server keeps what it last replied to each worker, from which it works out the worker's
update (`rules.py`): the worker makes no pass over its parameters for it.

A client whose server runs on its node writes the payload into shared memory and reads the
reply there (`shm.py`, parallel.shared_memory): only the header and a one-number notice of
the reply travel.

`spent`, `elapsed`: the microseconds the worker's training thread has spent on exchanges and
the microseconds since it began training (-1 from a sub-master), from which the server logs
the share of their time the workers lose to exchanges.

The server applies the rule (`rules.py`) to the parameter part; buffers (batch-norm
statistics) are not averaged: the central model takes the latest worker's, and each worker
keeps its own. Staleness of an update is the number of
central updates applied between the worker's last pull and its update. Every wait polls
with a deadline (`parallel.timeout_s`) and names the rank that went silent.

With sub-masters, each sub-master serves its workers with the mode's rule and forwards its
accumulated change to the top master every `sync_every` updates (downpour-style: the top
master adds it), receiving the top central variable back.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.errors import ConfigError, TrainingError
from scaletrain.parallel.allreduce import AllReduceStrategy
from scaletrain.parallel.layout import Layout
from scaletrain.parallel.rules import Downpour, Gem, Rule, make_rule, refill
from scaletrain.parallel.shm import NodeSlots, Slot
from scaletrain.parallel.strategy import Strategy
from scaletrain.parallel.world import World

TAG_HEADER, TAG_PAYLOAD, TAG_REPLY = 101, 102, 103
TAG_WAKE = 104  # to a client itself: its exchange thread stops waiting (_Client.wake)
TAG_STOP = 105  # server to client: the run stops (a signal reached one of its processes)
# Some MPI libraries (Open MPI over shared memory without a single-copy mechanism) move a
# large message in fragments and advance them only inside MPI calls, on both sides: every
# poll moves one fragment. So while a message of ours is travelling we poll without pausing
# (yielding the GIL between polls) for up to SPIN_S; longer waits (a server busy with other
# workers, a slow peer) back off to sleeps of at most MAX_PAUSE.
SPIN_S = 0.05
MAX_PAUSE = 5e-4
# parallel.reply_wait: sleep: the exchange thread looks for the master's reply this often
# (doubling from REPLY_PAUSE up to REPLY_MAX_PAUSE), a fraction of a step of ours
REPLY_PAUSE, REPLY_MAX_PAUSE = 2e-5, 2e-4
# a worker's last exchange is DONE, or STOP when its replica stopped early on a signal
UPDATE, DONE, STOP = 0, 1, 2


def wait_all(
    requests: list[Any],
    timeout_s: float,
    missing: Callable[[], str],
    spin_s: float = SPIN_S,
    receives: int = 0,
) -> None:
    """Complete MPI requests (the first `receives` of them receives), polling (MPI's Wait
    spins a core): without pauses for the first spin_s seconds, then with growing sleeps; on
    timeout give them up (give_up) and raise TrainingError(missing())."""
    from mpi4py import MPI

    start = time.monotonic()
    deadline, spin_until = start + timeout_s, start + spin_s
    pause = 1e-4
    while not MPI.Request.Testall(requests):
        now = time.monotonic()
        if now > deadline:
            give_up(requests, receives)
            raise TrainingError(missing())
        if now < spin_until:
            time.sleep(0)  # lets the training thread have the GIL between polls
            continue
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


def give_up(requests: list[Any], receives: int) -> None:
    """Abandon MPI requests whose peer may never answer: the receives (the first `receives`)
    cancelled, the sends left to complete on their own (cancelling a large send crashes
    MPICH), all freed."""
    from mpi4py import MPI

    for i, request in enumerate(requests):
        if request != MPI.REQUEST_NULL:
            if i < receives:
                request.Cancel()
            request.Free()


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


def _rule(cfg: ParallelConfig) -> Rule:
    optimizer = None
    if cfg.master_optim is not None:  # the task's optimizers, made for the master's centre
        from scaletrain.tasks.base import make_optimizer

        # fused: a master Adam's step over 530k parameters, one core: 0.8 against 1.6 ms
        optimizer = partial(make_optimizer, cfg.master_optim, fused=True)
    return make_rule(
        cfg.mode, alpha=cfg.easgd_alpha, momentum=cfg.gem_momentum, kappa=cfg.gem_kappa,
        optimizer=optimizer,
    )  # fmt: skip


def _period(cfg: ParallelConfig) -> int:
    return cfg.easgd_tau if cfg.mode == "easgd" else cfg.sync_every


class _StopNotice:
    """The server's word that the run stops: one receive, posted at the start and tested
    after every step (a microsecond), given up at the end if it never came."""

    def __init__(self, comm: Any, server: int) -> None:
        self._buffer = np.zeros(1, dtype=np.int64)
        self._request: Any = comm.Irecv(self._buffer, source=server, tag=TAG_STOP)
        self.received = False

    def __call__(self) -> bool:
        if self._request is not None and self._request.Test():
            self._request, self.received = None, True
        return self.received

    def close(self) -> None:
        if self._request is not None:
            give_up([self._request], receives=1)
            self._request = None


class _Client:
    """One side of the exchange: send header + payload, receive the reply (with a deadline).
    With a shared-memory `slot` (server on this node) payload and reply live in it and only
    the header and a notice of the reply travel as messages."""

    def __init__(
        self,
        comm: Any,
        me: int,
        server: int,
        size: int,
        timeout_s: float,
        slot: Slot | None,
        wakeable: bool = False,
    ) -> None:
        self.comm, self.me, self.server, self.timeout_s = comm, me, server, timeout_s
        self.header = np.zeros(4, dtype=np.int64)
        self.slot = slot
        self.payload = slot.payload if slot is not None else torch.zeros(size)
        self.reply = slot.reply if slot is not None else torch.zeros(size)
        self.notice = np.zeros(1, dtype=np.int64)  # that the reply is in the slot
        # `wakeable` (where the process goes on after giving its server up: a study's
        # trial): a receive from ourselves that the exchange thread waits on beside its
        # exchange, which wake() completes (posted at the first exchange, kept across them).
        # Else the exchange waits in MPI_Waitall, which costs less CPU time (MPICH, 2 cores:
        # 7.6 against 9.5 ms per step of a worker)
        self.wakeable = wakeable
        self._wake: Any = None
        self._wake_buffer = np.zeros(1, dtype=np.int64)
        self._wake_signal = np.ones(1, dtype=np.int64)  # kept: MPI may read it later

    def receive(self, into: torch.Tensor, what: str, startup_s: float | None = None) -> None:
        """One message from the server, within timeout_s (or `startup_s` while it starts)."""
        request = self.comm.Irecv(into.numpy(), source=self.server, tag=TAG_REPLY)
        allowance = startup_s or self.timeout_s
        wait_all([request], allowance, lambda: self.silent(what, startup_s), receives=1)

    def exchange(
        self, kind: int, step: int, wait: str = "poll", clock: tuple[float, float] | None = None
    ) -> torch.Tensor:
        """Send and wait for the reply. `wait`: poll (here, with the deadline); spin (in
        MPI_Waitall, which holds no GIL while it progresses the messages: for the exchange
        thread, whose caller keeps the deadline); sleep (like spin, but the master's work is
        waited for in short sleeps, probing for its reply). `clock`: the sender's seconds on
        exchanges and since it began (None: not a worker)."""
        from mpi4py import MPI

        spent, elapsed = (-1, -1) if clock is None else (round(t * 1e6) for t in clock)
        self.header[:] = (kind, step, spent, elapsed)
        # in a slot, the reply is written there and only its notice travels
        into = self.notice if self.slot is not None else self.reply.numpy()
        # posted first, the reply lands in place; probed for (sleep), it waits unmatched
        requests = [] if wait == "sleep" else [self.comm.Irecv(into, self.server, TAG_REPLY)]
        if self.slot is not None:
            self.slot.publish()  # the payload is in the slot before the header arrives
        else:
            requests.append(self.comm.Isend(self.payload.numpy(), self.server, TAG_PAYLOAD))
        requests.append(self.comm.Isend(self.header, dest=self.server, tag=TAG_HEADER))
        if wait == "poll":
            wait_all(
                requests, self.timeout_s, lambda: self.silent(f"reply at step {step}"), receives=1
            )
        elif self.wakeable:
            self._wait_unless_woken(requests, receives=0 if wait == "sleep" else 1)
        else:
            MPI.Request.Waitall(requests)
        if wait == "sleep":
            pause = REPLY_PAUSE
            while not self.comm.Iprobe(source=self.server, tag=TAG_REPLY):
                if self._wake is not None and self._wake.Test():
                    self._woken([], 0)
                time.sleep(pause)
                pause = min(2 * pause, REPLY_MAX_PAUSE)
            self.comm.Irecv(into, source=self.server, tag=TAG_REPLY).Wait()
        if self.slot is not None:
            self.slot.observe()
        return self.reply

    def _wait_unless_woken(self, requests: list[Any], receives: int) -> None:
        """Complete `requests` (the first `receives` of them receives) in MPI_Waitany (no GIL
        held while MPI waits), unless wake() is called first: then TrainingError."""
        from mpi4py import MPI

        if self._wake is None:
            self._wake = self.comm.Irecv(self._wake_buffer, source=self.me, tag=TAG_WAKE)
        waiting = [*requests, self._wake]
        while any(r != MPI.REQUEST_NULL for r in requests):
            if MPI.Request.Waitany(waiting) == len(requests):
                self._woken(requests, receives)

    def _woken(self, requests: list[Any], receives: int) -> None:
        self._wake = None
        give_up(requests, receives)
        raise TrainingError(f"exchange with parameter server rank {self.server} abandoned")

    def wake(self) -> None:
        """From another thread: end the exchange thread's wait (see _wait_unless_woken)."""
        self.comm.Isend(self._wake_signal, dest=self.me, tag=TAG_WAKE).Free()

    def close(self) -> None:
        """Withdraw the wake-up receive (the exchange thread must not be waiting)."""
        if self._wake is not None:
            self._wake.Cancel()
            self._wake.Wait()
            self._wake = None

    def silent(self, what: str, startup_s: float | None = None) -> str:
        # the CLI prefixes "error: rank R:" (this rank)
        limit, key = (self.timeout_s, "timeout_s")
        if startup_s:
            limit, key = startup_s, "startup_timeout_s"
        return (
            f"no {what} from parameter server rank {self.server} within {limit:g} s "
            f"(parallel.{key}); it died, hung or is validating longer"
        )


class ParamServerWorker(AllReduceStrategy):
    """Trains with the normal loop; every `sync_every` steps (and at each epoch end) the
    worker's lead rank exchanges with its server, then shares the reply with its replica."""

    keeps_own_state = True  # the master's checkpoint holds the central model only

    def __init__(
        self, cfg: ParallelConfig, world: World, layout: Layout, replica: Any, channel: Any
    ) -> None:
        super().__init__(cfg, world, layout, replica)
        self.name = cfg.mode
        self.rule = _rule(cfg)
        self.period = _period(cfg)
        self.channel = channel
        self.lead = self.role.gpu == 0
        self.server = layout.server_of(world.rank - self.role.gpu)
        self._client: _Client | None = None
        self._step = 0
        self._steps_per_epoch = 0
        self._closed = False
        self._stopping = False  # its group agreed to stop early (a signal): the last is STOP
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="ps-exchange")
            if cfg.overlap and self.lead
            else None
        )
        self._in_flight: tuple[Future[None], int] | None = None  # the round trip, its step
        # set once the exchange thread has copied the parameters it sends: until then the
        # optimizers must not step (see after_backward)
        self._copied = threading.Event()
        self._copied.set()
        # the training thread's seconds on exchanges (waiting, folding the reply in, handing
        # the next one off) since it began: the server logs their share of the workers' time
        self._spent, self._began = 0.0, 0.0  # began: set when training starts (setup)
        self._slots: NodeSlots | None = None
        self._notice: _StopNotice | None = None

    @property
    def is_main(self) -> bool:
        return False

    def exchange_seconds(self) -> float:
        """The training thread's seconds on exchanges so far."""
        return self._spent

    def setup(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, Any],
        *,
        steps_per_epoch: int = 0,
        step: int = 0,
    ) -> None:
        super().setup(models, optimizers, steps_per_epoch=steps_per_epoch, step=step)
        self.state = FlatState(models)
        self._steps_per_epoch, self._step = steps_per_epoch, step
        self._began = time.perf_counter()
        size = self.state.host.numel()
        # every process of the node takes part; the lead has a slot if its server is here
        self._slots = NodeSlots(
            self.channel, self.server if self.lead else -1, size, self.cfg.shared_memory
        )
        slot = self._slots.slot(self.world.rank) if self.lead else None
        self._client = _Client(
            self.channel, self.world.rank, self.server, size, self.cfg.timeout_s, slot,
            wakeable=not self.world.peer_loss_ends_job,
        )  # fmt: skip
        # on the CPU the exchange thread adds the last reply's correction while copying the
        # parameters it sends, into a spare flat tensor that the models move onto before
        # their optimizers step: the training thread makes no pass over the parameters
        self._rebinding = (
            self._thread is not None and self.lead and self.group_size == 1
            and self.state.host is self.state.flat
        )  # fmt: skip
        if self._rebinding:
            self.state.add_spare()
        if self.lead:  # the server may still be starting (compiling GEM's update)
            allowance = max(self.cfg.timeout_s, self.cfg.startup_timeout_s)
            self._client.receive(self.state.host, "initial weights", allowance)
            self._notice = _StopNotice(self.channel, self.server)
        self._share()

    def _share(self) -> None:
        """The lead's weights to the other processes of the replica, then onto the device."""
        if self.group_size > 1:
            self.comm.Bcast(self.state.host.numpy(), root=0)
        self.state.from_host()

    def after_backward(self, name: str, module: nn.Module) -> None:
        super().after_backward(name, module)
        # the optimizer steps next and changes the parameters
        self._spent += self._wait_copied()
        if self._spare_filled:  # it steps from the corrected weights in the spare
            self.state.move(name)

    @property
    def _spare_filled(self) -> bool:
        """The round trip in flight filled the spare (with the last correction)."""
        return self._rebinding and self._in_flight is not None

    def _wait_copied(self) -> float:
        """Wait until the exchange thread has copied the parameters; the seconds waited."""
        if self._copied.is_set():
            return 0.0
        assert self._client is not None
        start = time.perf_counter()
        if not self._copied.wait(self._client.timeout_s):
            raise TrainingError(
                f"the exchange thread did not copy the parameters within "
                f"{self._client.timeout_s:g} s (parallel.timeout_s)"
            )
        return time.perf_counter() - start

    def end_step(self, step: int) -> None:
        super().end_step(step)
        self._step = step
        spe = self._steps_per_epoch
        if step % self.period == 0 or (spe and step % spe == 0):
            self._exchange(UPDATE, step)

    def agree_stop(self, requested: bool) -> bool:
        """A signal here, the server's notice that another process got one (to the lead), or
        the replica's vote."""
        told = self._notice is not None and self._notice()
        self._stopping = super().agree_stop(requested or told)
        return self._stopping

    def _exchange(self, kind: int, step: int) -> None:
        """Send this period's payload and fold the server's reply into the local weights.

        With parallel.overlap the round trip runs on a thread of its own and its reply is
        folded in at the next exchange: the worker trains on while the messages travel and the
        server works, and the thread keeps MPI moving them (some libraries copy a large message
        only while calls are in progress on both sides, which a training worker never makes).
        The thread also copies the parameters it sends (while the training thread's next
        forward and backward only read them: its optimizers wait for the copy in
        after_backward). The reply waits in its buffer until then: on the CPU the thread adds
        its correction (Rule.fold) while copying, into a spare flat tensor that each model
        moves onto before its optimizer steps (FlatState.rebind): the step after an exchange
        computes its gradient on the weights without the correction, as if the reply had
        come a step later, and the training thread makes no pass over the parameters.
        Elsewhere the training thread adds the correction in."""
        assert self._client is not None
        start = time.perf_counter()
        self._wait_copied()
        if self._spare_filled:  # models without a backward this step move now
            self.state.flip()
        self.state.to_host()
        if self.lead:
            self._closed = True  # until it succeeds: no DONE exchange after a failed one
            host, n, client = self.state.host, self.state.n_params, self._client
            fold = self._in_flight is not None  # a reply is in: its correction is due
            if fold:
                self._finish_round_trip()
            if fold and (not self._rebinding or kind != UPDATE):  # else the next round trip
                self.rule.fold(host[:n], client.reply[:n], client.payload[:n], out=host[:n])
                fold = False
            # buffers travel as they are and the worker keeps its own: a reply's are those
            # of an earlier send, and taking them would undo the steps since
            if host.numel() > n:  # (the parameters: below, or the exchange thread)
                client.payload[n:] = host[n:]
            now = time.perf_counter()
            clock = (self._spent + now - start, now - self._began)
            if self._thread is not None and kind == UPDATE:
                self._copied.clear()
                round_trip = self._thread.submit(self._round_trip, kind, step, clock, fold)
                self._in_flight = (round_trip, step)
            else:
                client.payload[:n] = host[:n]
                reply = client.exchange(kind, step, clock=clock)
                self.rule.merge(host[:n], reply[:n])
            self._closed = kind != UPDATE
        self._share()
        self._spent += time.perf_counter() - start

    def _finish_round_trip(self) -> None:
        """Wait for the exchange thread's round trip, at most parallel.timeout_s from now.
        A server silent for longer ends the job (the CLI's MPI_Abort), the thread with it;
        where the process goes on (a study's next trial), close() wakes the thread."""
        assert self._in_flight is not None and self._client is not None
        round_trip, step = self._in_flight
        try:
            round_trip.result(timeout=self._client.timeout_s)  # raises what it raised
        except FutureTimeout:
            raise TrainingError(self._client.silent(f"reply at step {step}")) from None
        self._in_flight = None

    def _round_trip(self, kind: int, step: int, clock: tuple[float, float], fold: bool) -> None:
        """The exchange thread's part: the parameters copied into the payload (while the
        training thread's next forward and backward only read them; on the CPU also into the
        spare, with the last reply's correction if `fold`), then the reply, waited for in MPI
        (no GIL held: the training thread runs on undisturbed). The reply stays in its buffer
        until the next exchange folds it in."""
        client, state, n = self._client, self.state, self.state.n_params
        assert client is not None
        try:
            if self._rebinding:  # the payload still holds what was sent with the reply
                assert state.spare is not None
                rule = self.rule if fold else None
                refill(rule, state.host, client.reply, client.payload, state.spare, n)
            else:
                client.payload[:n] = state.host[:n]
        finally:
            self._copied.set()
        client.exchange(kind, step, wait=self.cfg.reply_wait, clock=clock)

    def close(self) -> None:
        if not self._closed and self._client is not None:
            self._closed = True
            # the last update in, the final central out
            self._exchange(STOP if self._stopping else DONE, self._step)
        if self._notice is not None:
            self._notice.close()
        client, in_flight = self._client, self._in_flight
        if client is not None and client.wakeable and in_flight and not in_flight[0].done():
            # a round trip given up on (its server silent): its thread stops waiting for it
            # (where the client is not wakeable, the job ends, the thread with it)
            client.wake()
            with contextlib.suppress(Exception):
                in_flight[0].exception(timeout=client.timeout_s)
            self._in_flight = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
        if self._client is not None:
            self._client.close()
        if self._slots is not None:
            self._slots.close()
        super().close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.name, "server": self.server}


class ParamServer(Strategy):
    """A master (holding the central model that the trainer validates and checkpoints) or a
    sub-master (serving its workers and forwarding to the top master)."""

    serves = True

    def __init__(self, cfg: ParallelConfig, world: World, layout: Layout, channel: Any) -> None:
        self.cfg = cfg
        self.world = world
        self.layout = layout
        self.role = layout.role(world.rank)
        self.name = cfg.mode
        self.rank = world.rank
        self.world_size = layout.trainers
        self.channel = channel
        self.clients = layout.clients_of(world.rank)
        self.upstream = layout.server_of(world.rank)
        # a sub-master: the top master's checkpoint does not hold its rule's state
        self.keeps_own_state = self.upstream >= 0
        # the top master of sub-masters adds their accumulated changes (downpour)
        top_of_subs = self.role.role == "master" and layout.masters > 1
        self.rule: Rule = Downpour() if top_of_subs else _rule(cfg)
        self.period = _period(cfg)
        self.version = 0  # central updates applied so far
        self._up: _Client | None = None
        self._slots: NodeSlots | None = None
        self.shared: dict[int, Slot | None] = {}
        self._notice: _StopNotice | None = None  # a sub-master's, from its master
        self._stop_word = np.ones(1, dtype=np.int64)  # what TAG_STOP carries (kept: MPI reads it)

    @property
    def is_main(self) -> bool:
        return self.role.role == "master" and self.role.group <= 0 and self.role.fold <= 0

    @property
    def data_rank(self) -> tuple[int, int]:
        return 0, self.world_size  # only to count the workers' steps per epoch

    def device(self, requested: str) -> torch.device:
        return self.world.device(requested)

    def state_dict(self) -> dict[str, Any]:
        """The rule's state (GEM's proxies, the master optimizer's): a resumed master goes on
        with them."""
        return {"rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "rule" in state:
            self.rule.load_state_dict(state["rule"])

    def setup(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, Any],
        *,
        steps_per_epoch: int = 0,
        step: int = 0,
    ) -> None:
        self.state = FlatState(models)
        self.central = self.state.host
        self.state.to_host()
        size = self.central.numel()
        # first, with every process of the node: a sub-master's slot towards its master, and
        # those of our clients on this node
        self._slots = NodeSlots(self.channel, self.upstream, size, self.cfg.shared_memory)
        if self.upstream >= 0:
            slot = self._slots.slot(self.rank)
            self._up = _Client(
                self.channel, self.rank, self.upstream, size, self.cfg.timeout_s, slot
            )
            self._notice = _StopNotice(self.channel, self.upstream)
            self._up.receive(self.central, "initial weights")
            self.state.from_host()
        self.payload = torch.zeros(size)
        self.shared = {c: self._slots.slot(c) for c in self.clients}
        # what each client was last sent: in its slot where it has one
        self.replies = {
            c: slot.reply if slot is not None else torch.zeros(size)
            for c, slot in self.shared.items()
        }
        self.notice = np.zeros(1, dtype=np.int64)
        if isinstance(self.rule, Gem) and self.cfg.gem_fused:  # compiled before the workers
            failed = self.rule.fuse(self.state.n_params)  # start: inside their allowance
            if failed is not None:
                print(
                    f"warning: parameter server rank {self.rank}: GEM's update runs "
                    f"uncompiled ({type(failed).__name__}: {str(failed).strip()[:300]}); "
                    "parallel.gem_fused: false skips the attempt",
                    file=sys.stderr,
                    flush=True,
                )
        initial = self.central.clone()
        for reply in self.replies.values():  # what each client was last sent
            reply.copy_(initial)
        requests = [
            self.channel.Isend(initial.numpy(), dest=c, tag=TAG_REPLY) for c in self.clients
        ]
        wait_all(
            requests, self.cfg.timeout_s, lambda: self._silent(self.clients, "initial weights")
        )

    def _allowance(self, first: bool) -> tuple[float, str]:
        """Seconds a client may stay silent, and the option that sets them: a first update
        may wait for steps that compile for minutes (gan.compile)."""
        if first:
            return max(self.cfg.timeout_s, self.cfg.startup_timeout_s), "startup_timeout_s"
        return self.cfg.timeout_s, "timeout_s"

    def _silent(self, ranks: list[int], what: str = "message", first: bool = False) -> str:
        names = ", ".join(str(r) for r in ranks)
        limit, key = self._allowance(first)
        return (
            f"parameter server rank {self.rank}: no {what} from rank {names} within "
            f"{limit:g} s (parallel.{key}); it died or hung"
        )

    # ------------------------------------------------------------------ the server loop

    def serve(
        self,
        steps_per_epoch: int,
        epochs: int,
        start_step: int,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, int, dict[str, float] | None]]:
        from mpi4py import MPI

        comm, timeout = self.channel, self.cfg.timeout_s
        headers = {c: np.zeros(4, dtype=np.int64) for c in self.clients}
        pending = {c: comm.Irecv(headers[c], source=c, tag=TAG_HEADER) for c in self.clients}
        sends: dict[int, Any] = {}
        heard = dict.fromkeys(self.clients, time.monotonic())
        # each worker's (exchange time, time since it began), µs as reported: the latest, and
        # the last of the previous epoch
        clock = dict.fromkeys(self.clients, (-1, -1))
        clock_before = dict(clock)
        pulled_at = dict.fromkeys(self.clients, 0)
        steps = dict.fromkeys(self.clients, start_step)
        applied = dict.fromkeys(self.clients, 0)  # updates from each client since the job began
        alive, staleness, stopped = set(self.clients), [], False
        told: list[Any] = []  # the stop notices sent (to every client at once, once)

        def tell_stop() -> None:
            """The run stops (a signal here, a client's STOP, our master's notice): every
            client still training stops after its step."""
            nonlocal stopped
            stopped = True
            if not told:
                told.extend(comm.Isend(self._stop_word, dest=c, tag=TAG_STOP) for c in pending)

        next_epoch, since_up, pause = start_step // steps_per_epoch, 0, 1e-4
        # time spent on updates since the epoch began (receiving, applying, replying, moving
        # replies): near all of it, and the master is what the workers wait for
        busy, epoch_start = 0.0, time.monotonic()
        while pending:
            if not told and (
                (stop is not None and stop()) or (self._notice is not None and self._notice())
            ):
                tell_stop()
            ready = next((c for c, r in pending.items() if r.Test()), None)
            if ready is None:
                now = time.monotonic()
                for c in list(pending):
                    first = pulled_at[c] == 0  # no update of c applied yet
                    if now - heard[c] > self._allowance(first)[0]:
                        self._lose(c, pending, alive, sends, heard[c], first)
                # replies still on their way advance only while this loop calls into MPI:
                # no pause then (see SPIN_S)
                replying = not MPI.Request.Testall(list(sends.values()))
                time.sleep(0 if replying else pause)
                pause = 1e-4 if replying else min(pause * 2, MAX_PAUSE)
                if replying:  # moving a reply is work on an update too
                    busy += time.monotonic() - now
                continue
            pause = 1e-4
            c = ready
            started = time.monotonic()
            kind, step, spent, elapsed = (int(v) for v in headers[c])
            clock[c] = (spent, elapsed)
            slot = self.shared[c]
            if slot is not None:  # the payload is in its slot
                slot.observe()
                payload = slot.payload
            else:
                payload = self.payload
                request = comm.Irecv(payload.numpy(), source=c, tag=TAG_PAYLOAD)
                try:
                    wait_all(  # the header is in, the payload on its way: spin until it is
                        [request], timeout, lambda c=c: self._silent([c], "update payload"),
                        timeout, receives=1,
                    )  # fmt: skip
                except TrainingError:
                    if self.cfg.on_worker_loss == "abort":
                        raise
                    self._lose(c, pending, alive, sends, heard[c])
                    continue
            heard[c], steps[c] = time.monotonic(), step
            applied[c] += 1
            staleness.append(self.version - pulled_at[c])
            reply = self.replies[c]
            if c in sends:
                sends.pop(c).Wait()  # long complete: the worker received it before sending
            n = self.state.n_params
            # a stop right after an update brings back what it was sent: nothing to apply,
            # and the rule's state (GEM's momentum) stays as a resumed run will find it
            if kind == STOP and torch.equal(payload[:n], reply[:n]):
                reply[:n] = self.central[:n]
            else:
                self.rule.apply(self.central[:n], c, payload[:n], reply[:n])  # and the reply
            self.central[n:] = reply[n:] = payload[n:]
            self.version += 1
            if slot is not None:  # the reply is in its slot: say so
                slot.publish()
                sends[c] = comm.Isend(self.notice, dest=c, tag=TAG_REPLY)
            else:
                sends[c] = comm.Isend(reply.numpy(), dest=c, tag=TAG_REPLY)
            pulled_at[c] = self.version
            if kind != UPDATE:
                del pending[c]
                if kind == STOP:
                    tell_stop()
            else:
                pending[c] = comm.Irecv(headers[c], source=c, tag=TAG_HEADER)
            since_up += 1
            if self._up is not None and since_up >= self.period and pending:
                self._forward(UPDATE, min(steps[c] for c in alive))
                since_up = 0
            busy += time.monotonic() - started
            while (
                next_epoch < epochs
                and alive
                and all(steps[c] >= (next_epoch + 1) * steps_per_epoch for c in alive)
            ):
                self.state.from_host()
                clocks = (clock, clock_before, alive)
                metrics = self._metrics(staleness, busy, epoch_start, clocks, applied)
                yield next_epoch, (next_epoch + 1) * steps_per_epoch, metrics
                staleness, next_epoch, clock_before = [], next_epoch + 1, dict(clock)
                busy, epoch_start = 0.0, time.monotonic()  # the validation just done is not ours
                heard = dict.fromkeys(self.clients, time.monotonic())  # our own work is not theirs
        wait_all(list(sends.values()), timeout, lambda: self._silent(list(sends), "final receipt"))
        give_up(told, receives=0)  # tiny, sent at once; a client that ended first never reads it
        if self._up is not None:  # a stop resumes from where every worker has been
            if stopped:
                self._forward(STOP, min((steps[c] for c in alive), default=0))
            else:
                self._forward(DONE, max(steps.values(), default=0))
        self.state.from_host()
        if not alive:
            raise TrainingError(f"parameter server rank {self.rank}: every worker was lost")
        reached = min(steps[c] for c in alive)
        if stopped and reached < epochs * steps_per_epoch:
            yield reached // steps_per_epoch, reached, None  # saved as a mid-epoch checkpoint
            return
        if next_epoch < epochs and reached > next_epoch * steps_per_epoch:
            # workers lost on the way: the last, partial epoch of the survivors still counts
            last = min(epochs, -(-reached // steps_per_epoch)) - 1
            clocks = (clock, clock_before, alive)
            yield last, reached, self._metrics(staleness, busy, epoch_start, clocks, applied)

    def close(self) -> None:
        if self._notice is not None:
            self._notice.close()
        if self._slots is not None:
            self._slots.close()

    def _forward(self, kind: int, step: int) -> None:
        """A sub-master's central to the top master (which adds its change since the last
        reply); the top's central back."""
        assert self._up is not None
        self._up.payload.copy_(self.central)
        self.central.copy_(self._up.exchange(kind, step))

    def _lose(
        self,
        client: int,
        pending: dict[int, Any],
        alive: set[int],
        sends: dict[int, Any],
        heard: float,
        first: bool = False,
    ) -> None:
        message = self._silent([client], "first update" if first else "message", first)
        if self.cfg.on_worker_loss == "abort":
            raise TrainingError(message + " (parallel.on_worker_loss: abort)")
        print(
            f"warning: {message} (silent for {time.monotonic() - heard:.1f} s); going on "
            f"without it (parallel.on_worker_loss: continue)",
            file=sys.stderr,
            flush=True,
        )
        request = pending.pop(client, None)
        if request is not None and not request.Test():  # a completed one cannot be cancelled
            request.Cancel()
        sends.pop(client, None)  # a reply it may never receive: not waited for at the end
        alive.discard(client)
        self.world.lost.add(client)  # MPI_Finalize would wait for it: see World.close
        if isinstance(self.rule, Gem):
            self.rule.forget(client)

    @staticmethod
    def _lost_to_exchanges(
        now: dict[int, tuple[int, int]], before: dict[int, tuple[int, int]], alive: set[int]
    ) -> float | None:
        """The share of their time the workers' training threads spent on exchanges between
        their reports `before` and `now` (mean over workers; None when no client is a worker
        reporting: a top master serves sub-masters)."""
        shares = []
        for c in alive:
            (spent, elapsed), (spent0, elapsed0) = now[c], before[c]
            if spent < 0:
                continue
            if spent0 < 0:  # its first report: from when it began
                spent0 = elapsed0 = 0
            shares.append((spent - spent0) / max(elapsed - elapsed0, 1))
        return min(float(np.mean(shares)), 1.0) if shares else None

    def _metrics(
        self,
        staleness: list[int],
        busy: float,
        since: float,
        clocks: tuple[Any, Any, set[int]],
        applied: dict[int, int],
    ) -> dict[str, float]:
        """An epoch's: `busy` seconds spent on updates since `since` (monotonic); `clocks` the
        workers' reports now and at the epoch's start, and those alive (_lost_to_exchanges);
        `applied` the updates taken from each client since the job began."""
        lost = self._lost_to_exchanges(*clocks)
        wall = max(time.monotonic() - since, 1e-9)
        counts = [applied[c] for c in clocks[2]]
        out = {
            "ps/staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
            "ps/staleness_max": float(max(staleness, default=0)),
            "ps/updates": float(self.version),
            # the client that sent the fewest and the most: far apart, one lags (a straggler)
            "ps/client_updates_min": float(min(counts, default=0)),
            "ps/client_updates_max": float(max(counts, default=0)),
            "ps/master_busy": round(busy / wall, 4),
        }
        if lost is not None:
            out["ps/worker_exchange"] = round(lost, 4)
        if isinstance(self.rule, Gem):
            out["ps/gem_scale"] = self.rule.last_scale
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.name,
            "rank": self.rank,
            "role": self.role.role,
            "world_size": self.world.size,
            "layout": self.layout.describe(),
            "clients": self.clients,
            # the clients exchanging through shared memory (on this node), not messages
            "shared_memory": sorted(c for c, slot in self.shared.items() if slot is not None),
            "world": self.world.describe(),
        }
