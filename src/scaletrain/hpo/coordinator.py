"""A study over one MPI job: rank 0 coordinates, groups of ranks evaluate trials.

The layout (parallel/layout.py) is 1 + N_G × N_F × fold size: rank 0 asks and tells through
Optuna and sends each trial to a free group's first rank; the group's ranks train the N_F
folds at once, each fold on its own sub-communicator (with the distributed-training modes
of the parallel package when a fold has several processes), and the group's first rank
sends the fold results back. The messages are small pickled objects on a duplicate of the
world communicator (the control plane only; training never sees them).

No wait is unbounded. Every training rank beats (a thread adding to its counter in a TCP
store that rank 0 hosts: not over MPI, whose calls from a thread can wait for the library's
lock while the main thread blocks in a collective) about once a second. A group with a rank
silent for parallel.timeout_s (dead or frozen) is lost, as is one that stays busy past
trial_timeout (plus a grace period); its trial is recorded as failed, it gets no more work,
the study goes on with the other groups, and at the end the job is aborted (exit 3) so that
what is left of the group does not hang.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from scaletrain.config import Config
from scaletrain.errors import LayoutError
from scaletrain.hpo.driver import TrialReporter
from scaletrain.hpo.space import with_params
from scaletrain.hpo.trial import FoldResult, TrialTask, run_fold
from scaletrain.parallel.layout import Layout
from scaletrain.parallel.liveness import beat_interval, open_store
from scaletrain.parallel.world import World

TASK, RESULT, REPORT, DECISION = 71, 72, 73, 74
GRACE_S = 60.0  # beyond trial_timeout before a silent group is given up


def run_mpi(cfg: Config, raw: dict[str, Any], dists: dict[str, Any], options, world: World):
    """Every rank calls this; rank 0 returns the StudyResult, the others None."""
    from scaletrain.hpo.study import run_study

    layout = Layout(
        options.groups, cfg.search.folds, options.masters, options.workers, options.gpus,
        coordinator=True,
    )  # fmt: skip
    if world.size != layout.size:
        raise LayoutError(layout.mismatch(world.size))
    raw = with_params(raw, fold_parallel(cfg, layout))
    # collective splits, in the same order on every rank
    control = world.comm.Dup()
    group_comm = world.split(layout.group_color(world.rank))
    fold_comm = world.split(layout.fold_color(world.rank))
    timeout_s = cfg.parallel.timeout_s
    beats = open_store(world.comm, timeout_s)  # hosted by rank 0
    if world.rank != 0:
        heart = Heartbeat(beats, world.rank, beat_interval(timeout_s))
        try:
            serve_group(world, layout, control, group_comm, fold_comm)
        except Exception as exc:  # a bug, not a failed trial: the others would wait forever
            print(f"error: rank {world.rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
            world.abort(1)
        finally:
            heart.stop()
        return None
    evaluator = MpiEvaluator(control, layout, beats, timeout_s)
    try:
        return run_study(cfg, raw, dists, evaluator, options, header=layout.table())
    finally:
        evaluator.close()
        if evaluator.lost:
            print(
                f"error: groups led by ranks {evaluator.lost} did not answer; aborting the job",
                file=sys.stderr,
                flush=True,
            )
            world.abort(3)


def fold_parallel(cfg: Config, layout: Layout) -> dict[str, Any]:
    """The parallel.* settings a fold trains with: none, all-reduce, or a parameter server."""
    if layout.fold_size == 1:
        return {"parallel.mode": "none"}
    if layout.masters == 0:
        return {"parallel.mode": "allreduce"}
    mode = cfg.parallel.mode if cfg.parallel.mode in ("downpour", "easgd", "gem") else "downpour"
    return {
        "parallel.mode": mode,
        "parallel.masters": layout.masters,
        "parallel.workers": layout.workers,
    }


class Heartbeat:
    """A training rank's thread telling rank 0 that this process is alive."""

    def __init__(self, store: Any, rank: int, interval: float) -> None:
        self.store, self.key, self.interval = store, f"beat/{rank}", interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaletrain-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.add(self.key, 1)
            except Exception:  # rank 0 is gone: the job is ending
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5 * self.interval)


class MpiEvaluator:
    """Rank 0's side: trials go to free groups, results and epoch reports come back."""

    def __init__(self, comm: Any, layout: Layout, beats: Any, timeout_s: float) -> None:
        self.comm = comm
        self.beats, self.timeout_s = beats, timeout_s
        self.reporter: TrialReporter | None = None
        self.free = [layout.fold_base(g, 0) for g in range(layout.groups)]
        self.busy: dict[int, tuple[TrialTask, float]] = {}
        self.lost: list[int] = []
        span = layout.folds * layout.fold_size
        self.members = {leader: range(leader, leader + span) for leader in self.free}
        now = time.monotonic()
        self.counts = dict.fromkeys(range(1, layout.size), -1)
        self.heard = dict.fromkeys(range(1, layout.size), now)
        self._read = now

    @property
    def slots(self) -> int:
        return len(self.free) + len(self.busy)

    def submit(self, task: TrialTask) -> None:
        leader = self.free.pop(0)
        self.comm.send(task, dest=leader, tag=TASK)
        self.busy[leader] = (task, time.monotonic())

    def poll(self, wait_s: float) -> list[tuple[int, list[FoldResult]]]:
        from mpi4py import MPI

        out: list[tuple[int, list[FoldResult]]] = []
        end = time.monotonic() + wait_s
        status = MPI.Status()
        while True:
            while self.comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                source, tag = status.Get_source(), status.Get_tag()
                message = self.comm.recv(source=source, tag=tag)
                if tag == REPORT:
                    number, epochs, value = message
                    prune = self.reporter(number, epochs, value) if self.reporter else False
                    self.comm.send(bool(prune), dest=source, tag=DECISION)
                elif tag == RESULT:
                    number, results = message
                    if source in self.lost:  # already failed and given up
                        continue
                    self.busy.pop(source, None)
                    self.free.append(source)
                    out.append((number, results))
            out += self._give_up_silent_groups()
            out += self._give_up_lost_groups()
            if out or time.monotonic() >= end:
                return out
            time.sleep(0.005)

    def _give_up_silent_groups(self) -> list[tuple[int, list[FoldResult]]]:
        out = []
        for leader, (task, t0) in list(self.busy.items()):
            if task.trial_timeout and time.monotonic() - t0 > task.trial_timeout + GRACE_S:
                del self.busy[leader]
                self.lost.append(leader)
                error = (
                    f"the group led by rank {leader} did not answer within trial_timeout + "
                    f"{GRACE_S:.0f} s; it gets no more trials"
                )
                out.append((task.number, [FoldResult(0, error=error)]))
        return out

    def _give_up_lost_groups(self) -> list[tuple[int, list[FoldResult]]]:
        """Groups with a rank whose heartbeats stopped for timeout_s: dead or frozen."""
        now = time.monotonic()
        if now - self._read < beat_interval(self.timeout_s):
            return []
        self._read = now
        for rank in self.counts:  # a loopback round trip each, once per heartbeat interval
            count = self.beats.add(f"beat/{rank}", 0)
            if count != self.counts[rank]:
                self.counts[rank], self.heard[rank] = count, now
        out = []
        for leader in [*self.busy, *self.free]:
            silent = [r for r in self.members[leader] if now - self.heard[r] > self.timeout_s]
            if not silent:
                continue
            names = ", ".join(str(r) for r in silent)
            error = (
                f"the group led by rank {leader} lost rank {names}: no heartbeat for "
                f"{now - self.heard[silent[0]]:.1f} s (parallel.timeout_s={self.timeout_s:g}); "
                f"it died or froze and gets no more trials"
            )
            print(f"warning: {error}", file=sys.stderr, flush=True)
            self.lost.append(leader)
            if leader in self.free:
                self.free.remove(leader)
            else:
                task, _ = self.busy.pop(leader)
                out.append((task.number, [FoldResult(0, error=error)]))
        return out

    def close(self) -> None:
        """Tell the idle groups to stop (busy ones are waited for by the driver first)."""
        for leader in self.free:
            self.comm.send(None, dest=leader, tag=TASK)
        self.free = []


def serve_group(world: World, layout: Layout, control: Any, group_comm: Any, fold_comm: Any):
    """A training rank's loop: receive a trial, train this rank's fold, send results back."""
    from scaletrain.parallel import make_strategy

    role = layout.role(world.rank)
    fold_world = World(
        fold_comm.rank, fold_comm.size, fold_comm, world.local_rank, world.local_size,
        peer_loss_ends_job=False,  # the coordinator gives this group up instead
    )  # fmt: skip
    leader = group_comm.rank == 0
    while True:
        task = control.recv(source=0, tag=TASK) if leader else None
        task = group_comm.bcast(task, root=0)
        if task is None:
            return
        alone = fold_comm.size == 1  # may stop on its own (timeout, pruning) without a hang
        report = None
        if task.prune and role.fold == 0 and alone:  # fold 0's rank is the group's leader

            def report(epochs: int, value: float, number: int = task.number) -> bool:
                control.send((number, epochs, value), dest=0, tag=REPORT)
                return control.recv(source=0, tag=DECISION)

        result = run_fold(
            task,
            role.fold,
            make_strategy=None if alone else lambda cfg: make_strategy(cfg.parallel, fold_world),
            report=report,
            interruptible=alone,
        )
        fold_results = fold_comm.gather(result, root=0)
        summary = _fold_summary(fold_results) if fold_comm.rank == 0 else None
        gathered = group_comm.gather(summary, root=0)
        if leader:
            results = [r for r in gathered if r is not None]
            control.send((task.number, results), dest=0, tag=RESULT)


def _fold_summary(results: list[FoldResult]) -> FoldResult:
    """One result per fold: its main rank's, or the first error of any of its ranks."""
    errors = [r for r in results if r.error]
    return errors[0] if errors else results[0]
