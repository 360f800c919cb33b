"""The process layout of one MPI job: counts -> rank -> role, validated, printable.

    N = [1 coordinator] + N_G groups × N_F folds × (servers + N_M × N_W × N_GPU)

- the coordinator (rank 0) exists only when hyper-parameter groups are driven by it;
- each fold trains one model: `servers` parameter-server processes (none when masters = 0,
  one master when masters = 1, a top master plus `masters` sub-masters when masters > 1),
  then N_M × N_W workers (N_W per master), each worker being N_GPU processes that all-reduce
  gradients among themselves.

Plain synchronous data parallel is `Layout(gpus=world_size)`; one master with two workers is
`Layout(masters=1, workers=2)` (3 processes). Ranks are numbered fold after fold; inside a fold
the servers come first (top master, then sub-masters), then the workers, master by master.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scaletrain.errors import LayoutError

Role = Literal["coordinator", "master", "sub-master", "worker"]
NO_COLOR = -1  # this rank takes no part in that communicator (MPI.UNDEFINED)


@dataclass(frozen=True)
class RankRole:
    """Where one rank sits in the layout; indices are -1 where they do not apply."""

    rank: int
    role: Role
    group: int = -1
    fold: int = -1
    master: int = -1  # index of the master (sub-master) this rank is or serves
    worker: int = -1  # worker index inside its master
    gpu: int = -1  # index inside the worker's all-reduce group

    @property
    def trains(self) -> bool:
        return self.role == "worker"

    @property
    def serves(self) -> bool:
        return self.role in ("master", "sub-master")


@dataclass(frozen=True)
class Layout:
    groups: int = 1  # N_G: hyper-parameter trials evaluated at once
    folds: int = 1  # N_F: cross-validation folds trained in parallel
    masters: int = 0  # N_M: 0 = no parameter server; > 1 = sub-masters under a top master
    workers: int = 1  # N_W: workers per master
    gpus: int = 1  # N_GPU: processes per worker, all-reducing gradients
    coordinator: bool = False

    def __post_init__(self) -> None:
        for name in ("groups", "folds", "workers", "gpus"):
            if getattr(self, name) < 1:
                raise LayoutError(f"layout: {name} must be at least 1, got {getattr(self, name)}")
        if self.masters < 0:
            raise LayoutError(f"layout: masters must be 0 or more, got {self.masters}")
        if self.masters == 0 and self.workers != 1:
            raise LayoutError(
                f"layout: {self.workers} workers need a parameter server (masters >= 1)"
            )
        if self.groups > 1 and not self.coordinator:
            raise LayoutError("layout: several groups need a coordinator (rank 0)")

    # ------------------------------------------------------------------ sizes

    @property
    def servers(self) -> int:
        """Parameter-server processes per fold: none, one master, or top + sub-masters."""
        return 0 if self.masters == 0 else 1 if self.masters == 1 else 1 + self.masters

    @property
    def trainers(self) -> int:
        """Training processes per fold (workers × gpus)."""
        return max(self.masters, 1) * self.workers * self.gpus

    @property
    def fold_size(self) -> int:
        return self.servers + self.trainers

    @property
    def size(self) -> int:
        return int(self.coordinator) + self.groups * self.folds * self.fold_size

    @classmethod
    def for_world(
        cls,
        world_size: int,
        *,
        masters: int = 0,
        workers: int = 0,
        groups: int = 1,
        folds: int = 1,
        coordinator: bool = False,
    ) -> Layout:
        """The layout that fills `world_size` ranks.

        Without servers, a fold's processes form one all-reduce group. With servers,
        workers = 0 makes every remaining process a worker; workers > 0 gives each worker
        the remaining processes as its all-reduce group (N_GPU).
        """
        servers = 0 if masters == 0 else 1 if masters == 1 else 1 + masters
        per_fold = (world_size - int(coordinator)) // max(groups * folds, 1)
        per_master = (per_fold - servers) // max(masters, 1)
        if masters == 0:
            n_workers, gpus = 1, per_master
        elif workers == 0:
            n_workers, gpus = per_master, 1
        else:
            n_workers, gpus = workers, per_master // workers
        layout = cls(groups, folds, masters, max(n_workers, 1), max(gpus, 1), coordinator)
        layout.check(world_size)
        return layout

    def check(self, world_size: int) -> None:
        """Raise LayoutError, with the role table, unless the layout fills the world exactly."""
        if world_size != self.size:
            raise LayoutError(self.mismatch(world_size))

    def mismatch(self, world_size: int) -> str:
        return (
            f"the layout needs {self.size} processes but the MPI world has {world_size}:\n"
            f"{self.table()}"
        )

    # ------------------------------------------------------------------ roles

    def role(self, rank: int) -> RankRole:
        if not 0 <= rank < self.size:
            raise LayoutError(f"rank {rank} is outside the layout of {self.size} processes")
        if self.coordinator:
            if rank == 0:
                return RankRole(0, "coordinator")
            local = rank - 1
        else:
            local = rank
        fold_index, inside = divmod(local, self.fold_size)
        group, fold = divmod(fold_index, self.folds)
        if inside < self.servers:
            if inside == 0:
                return RankRole(rank, "master", group, fold, master=-1 if self.masters > 1 else 0)
            return RankRole(rank, "sub-master", group, fold, master=inside - 1)
        t = inside - self.servers
        master, rest = divmod(t, self.workers * self.gpus)
        worker, gpu = divmod(rest, self.gpus)
        return RankRole(rank, "worker", group, fold, master, worker, gpu)

    def roles(self) -> list[RankRole]:
        return [self.role(r) for r in range(self.size)]

    def fold_base(self, group: int, fold: int) -> int:
        """World rank of the first process of a fold."""
        return int(self.coordinator) + (group * self.folds + fold) * self.fold_size

    def server_of(self, rank: int) -> int:
        """World rank of the server a worker (or sub-master) talks to; -1 for none."""
        r = self.role(rank)
        if r.role == "coordinator" or self.masters == 0 or r.role == "master":
            return -1
        base = self.fold_base(r.group, r.fold)
        if r.role == "sub-master" or self.masters == 1:
            return base
        return base + 1 + r.master

    def clients_of(self, rank: int) -> list[int]:
        """World ranks that exchange with this server: its workers' lead ranks, or sub-masters."""
        r = self.role(rank)
        if not r.serves:
            return []
        base = self.fold_base(r.group, r.fold)
        if r.role == "master" and self.masters > 1:
            return [base + 1 + m for m in range(self.masters)]
        m = max(r.master, 0)
        first = base + self.servers + m * self.workers * self.gpus
        return [first + w * self.gpus for w in range(self.workers)]

    # ------------------------------------------------------------------ communicator colours

    def fold_color(self, rank: int) -> int:
        """All processes of one fold (servers and workers); NO_COLOR for the coordinator."""
        r = self.role(rank)
        return NO_COLOR if r.role == "coordinator" else r.group * self.folds + r.fold

    def group_color(self, rank: int) -> int:
        r = self.role(rank)
        return NO_COLOR if r.role == "coordinator" else r.group

    def replica_color(self, rank: int) -> int:
        """The N_GPU processes of one worker, which all-reduce gradients; NO_COLOR otherwise."""
        r = self.role(rank)
        if not r.trains:
            return NO_COLOR
        fold_index = r.group * self.folds + r.fold
        return (fold_index * max(self.masters, 1) + r.master) * self.workers + r.worker

    def replica_ranks(self, rank: int) -> list[int]:
        """World ranks of the all-reduce group `rank` belongs to (empty for servers)."""
        r = self.role(rank)
        if not r.trains:
            return []
        return [rank - r.gpu + g for g in range(self.gpus)]

    # ------------------------------------------------------------------ printing

    def describe(self) -> dict[str, int | bool]:
        return {
            "groups": self.groups,
            "folds": self.folds,
            "masters": self.masters,
            "workers": self.workers,
            "gpus": self.gpus,
            "coordinator": self.coordinator,
            "size": self.size,
        }

    def table(self, max_rows: int = 40) -> str:
        head = (
            f"layout: coordinator={int(self.coordinator)} groups={self.groups} "
            f"folds={self.folds} masters={self.masters} workers={self.workers} "
            f"gpus={self.gpus} -> {self.size} processes"
        )
        lines = [head, f"{'rank':>5}  {'role':<11} {'group':>5} {'fold':>4} "
                 f"{'master':>6} {'worker':>6} {'gpu':>3}"]  # fmt: skip
        roles = self.roles()
        shown = roles if len(roles) <= max_rows else roles[: max_rows - 1] + roles[-1:]
        for i, r in enumerate(shown):
            if len(roles) > max_rows and i == max_rows - 1:
                lines.append(f"{'...':>5}")

            def cell(v: int, width: int) -> str:
                return f"{'-' if v < 0 else v:>{width}}"

            lines.append(
                f"{r.rank:>5}  {r.role:<11} {cell(r.group, 5)} {cell(r.fold, 4)} "
                f"{cell(r.master, 6)} {cell(r.worker, 6)} {cell(r.gpu, 3)}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
