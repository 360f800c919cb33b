"""Asynchronous parameter servers (downpour, easgd, gem): the server's MPI message loop.

Messages carry the models' flat vector (`flatstate.py`, `messages.py`). The server keeps what
it last replied to each worker, from which it works out the worker's update (`rules.py`): the
worker makes no pass over its parameters for it.

The server applies the rule to the parameter part; buffers (batch-norm statistics) are not
averaged: the central model takes the latest worker's, and each worker keeps its own.
Staleness of an update is the number of central updates applied between the worker's last
pull and its update. Every wait polls with a deadline (`parallel.timeout_s`) and names the
rank that went silent.

With sub-masters, each sub-master serves its workers with the mode's rule and forwards its
accumulated change to the top master every `sync_every` updates (downpour-style: the top
master adds it), receiving the top central variable back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.errors import TrainingError
from scaletrain.parallel.flatstate import FlatState
from scaletrain.parallel.layout import Layout
from scaletrain.parallel.messages import (
    DONE,
    MAX_PAUSE,
    STOP,
    TAG_HEADER,
    TAG_PAYLOAD,
    TAG_REPLY,
    TAG_STOP,
    UPDATE,
    Client,
    StopNotice,
    give_up,
    wait_all,
)
from scaletrain.parallel.rules import Downpour, Gem, Rule, exchange_period, make_rule
from scaletrain.parallel.shm import NodeSlots, Slot
from scaletrain.parallel.strategy import Strategy
from scaletrain.parallel.world import World


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
        self.rule: Rule = Downpour() if top_of_subs else make_rule(cfg)
        self.period = exchange_period(cfg)
        self.version = 0  # central updates applied so far
        self._up: Client | None = None
        self._slots: NodeSlots | None = None
        self.shared: dict[int, Slot | None] = {}
        self._notice: StopNotice | None = None  # a sub-master's, from its master
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
            self._up = Client(
                self.channel, self.rank, self.upstream, size, self.cfg.timeout_s, slot
            )
            self._notice = StopNotice(self.channel, self.upstream)
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

        def epoch_metrics() -> dict[str, float]:  # of the epoch so far
            clocks = (clock, clock_before, alive)
            return self._metrics(staleness, busy, epoch_start, clocks, applied)

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
                yield next_epoch, (next_epoch + 1) * steps_per_epoch, epoch_metrics()
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
            yield last, reached, epoch_metrics()

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
        alive = clocks[2]
        counts = [applied[c] for c in alive]
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
