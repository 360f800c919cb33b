"""A parameter-server worker: trains with the normal loop (all-reducing within its replica when
it has several processes) and exchanges with its server every `sync_every` steps (the protocol:
`messages.py`; the rules: `rules.py`; the server: `paramserver.py`)."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.errors import TrainingError
from scaletrain.parallel.allreduce import AllReduceStrategy
from scaletrain.parallel.flatstate import FlatState
from scaletrain.parallel.layout import Layout
from scaletrain.parallel.messages import DONE, STOP, UPDATE, Client, StopNotice
from scaletrain.parallel.rules import exchange_period, make_rule, refill
from scaletrain.parallel.shm import NodeSlots
from scaletrain.parallel.world import World


class ParamServerWorker(AllReduceStrategy):
    """Trains with the normal loop; every `sync_every` steps (and at each epoch end) the
    worker's lead rank exchanges with its server, then shares the reply with its replica."""

    keeps_own_state = True  # the master's checkpoint holds the central model only

    def __init__(
        self, cfg: ParallelConfig, world: World, layout: Layout, replica: Any, channel: Any
    ) -> None:
        super().__init__(cfg, world, layout, replica)
        self.name = cfg.mode
        self.rule = make_rule(cfg)
        self.period = exchange_period(cfg)
        self.channel = channel
        self.lead = self.role.gpu == 0
        self.server = layout.server_of(world.rank - self.role.gpu)
        self._client: Client | None = None
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
        self._notice: StopNotice | None = None

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
        self._client = Client(
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
            self._notice = StopNotice(self.channel, self.server)
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
