"""The MPI world: who we are, communicators split by layout, torch.distributed brokered by MPI.

MPI (mpi4py) is the control plane and the launcher's contract; it is imported only when the
process was started by a launcher (mpirun, mpiexec, srun), so one process needs no MPI.
torch.distributed (NCCL on GPU, Gloo on CPU) is the data plane of the all-reduce groups: the
first rank of a group opens a TCP store on a free port and broadcasts its address over MPI,
so users set no MASTER_ADDR / MASTER_PORT.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from scaletrain.errors import ConfigError
from scaletrain.parallel.layout import NO_COLOR

# set by the launchers we support: MPICH/Hydra and Intel MPI, Open MPI, PMIx (srun --mpi=pmix),
# MVAPICH, and srun job steps
_LAUNCHER_SIZE_VARS = (
    "PMI_SIZE",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_STEP_NUM_TASKS",
)


def launched_size(environ: Mapping[str, str] | None = None) -> int:
    """How many processes the launcher says it started (1 when none did or it does not say)."""
    env = os.environ if environ is None else environ
    sizes = [env.get(name, "") for name in _LAUNCHER_SIZE_VARS]
    return max([int(v) for v in sizes if v.isdigit()] + [1])


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a launcher started this process as part of a job of several."""
    env = os.environ if environ is None else environ
    return launched_size(env) > 1 or "PMIX_RANK" in env


def meet(comm: Any, pause_s: float = 1e-3, while_waiting: Callable[[], None] | None = None) -> None:
    """A barrier of `comm` that sleeps while it waits (MPI's Barrier spins a core, which other
    processes' work on the same cores would feel); `while_waiting` runs between sleeps."""
    request = comm.Ibarrier()
    while not request.Test():
        if while_waiting is not None:
            while_waiting()
        time.sleep(pause_s)


@dataclass
class World:
    """This process's place in the MPI job; `comm` is None for a single process."""

    rank: int = 0
    size: int = 1
    comm: Any = None
    local_rank: int = 0
    local_size: int = 1
    # ranks this process gave up on (parallel.on_worker_loss: continue)
    lost: set[int] = field(default_factory=set)
    # False in the groups of a hyper-parameter study: a rank lost there fails the trial and
    # the coordinator gives the group up, the job goes on
    peer_loss_ends_job: bool = True

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> World:
        """The MPI world if a launcher started this process, else one process without MPI."""
        if not launched_by_mpi(environ):
            return cls()
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        expected = launched_size(environ)
        if comm.size == 1 and expected > 1:
            env = os.environ if environ is None else environ
            # srun without --mpi (and a cluster default of none) starts processes without PMI
            how = (
                "srun --mpi=pmix (or pmi2; `srun --mpi=list` shows what the cluster offers)"
                if "SLURM_STEP_NUM_TASKS" in env
                else "its mpiexec"
            )
            raise ConfigError(
                f"the launcher started {expected} processes but MPI sees only this one: the "
                f"launcher does not belong to the MPI library mpi4py uses "
                f"({MPI.Get_library_version().splitlines()[0].strip()}); use {how}"
            )
        # node-local rank picks the GPU: one process per GPU
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        world = cls(comm.rank, comm.size, comm, local.rank, local.size)
        local.Free()
        return world

    def split(self, color: int) -> Any:
        """A sub-communicator of the ranks with the same colour (None for NO_COLOR / no MPI)."""
        if self.comm is None:
            return None
        from mpi4py import MPI

        sub = self.comm.Split(MPI.UNDEFINED if color == NO_COLOR else color, key=self.rank)
        return None if sub == MPI.COMM_NULL else sub

    def device(self, requested: str) -> torch.device:
        """One GPU per process, chosen by the node-local rank; CPU when asked or none."""
        if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            return torch.device("cuda")  # asked for explicitly: let torch raise its own error
        index = self.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def meet(self, pause_s: float = 1e-3, while_waiting: Callable[[], None] | None = None) -> None:
        """`meet` over every process of the job (nothing to wait for without MPI)."""
        if self.comm is not None:
            meet(self.comm, pause_s, while_waiting)

    def abort(self, code: int = 1) -> None:
        """Stop every process of the job (used when one rank fails and the others would wait)."""
        if self.comm is not None and self.size > 1:
            _abort(self.comm, code)

    def close(self, timeout_s: float, last: bool) -> None:
        """This process's work is done: every process meets once more before MPI_Finalize,
        which would wait forever for a lost one. `last`: the process that ends the work (the
        main one: a master ends after its workers); it waits `timeout_s` at most, and if
        some process does not come (or it gave up on one), it ends the job with MPI_Abort(0):
        the results are written."""
        if self.comm is None or self.size == 1:
            return
        # sleeping between polls: the last process may still be validating
        deadline = time.monotonic() + (0 if self.lost else timeout_s)

        def end_job_when_late() -> None:
            if last and time.monotonic() > deadline:
                lost = ", ".join(str(r) for r in sorted(self.lost)) or "some"
                print(
                    f"rank {self.rank}: done, but rank {lost} did not reach the end (lost); "
                    f"ending the job with MPI_Abort(0) instead of waiting for it",
                    file=sys.stderr,
                    flush=True,
                )
                _abort(self.comm, 0)

        self.meet(0.01, end_job_when_late)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"rank": self.rank, "size": self.size}
        if self.comm is not None:
            from mpi4py import MPI

            info["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
            info["local_size"] = self.local_size
        return info


def _abort(comm: Any, code: int) -> None:
    """MPI_Abort, after a moment for the launcher to forward what this process printed
    (it stops forwarding when it kills the job: the last lines were lost)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.2)
    comm.Abort(code)


def tcp_store(comm: Any, timeout_s: float) -> Any:
    """A torch.distributed TCP store hosted by the first rank of `comm` (collective): its
    address travels over MPI, so users set no environment variables."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    if comm.rank == 0:
        host = socket.gethostname()
        store = dist.TCPStore(
            host, 0, comm.size, is_master=True, timeout=timeout, wait_for_workers=False
        )
        address = (host, store.port)
    address = comm.bcast(address if comm.rank == 0 else None, root=0)
    if comm.rank != 0:
        store = dist.TCPStore(address[0], address[1], comm.size, is_master=False, timeout=timeout)
    return store


def init_process_group(comm: Any, device: torch.device, timeout_s: float) -> None:
    """torch.distributed over the ranks of `comm`; its first rank hosts the TCP store."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    timeout = timedelta(seconds=timeout_s)
    store = tcp_store(comm, timeout_s)
    backend = "nccl" if device.type == "cuda" and not _gpus_shared(comm) else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(
        backend, store=store, rank=comm.rank, world_size=comm.size, timeout=timeout, **kwargs
    )


def _gpus_shared(comm: Any) -> bool:
    """Whether some GPU serves several ranks of `comm` (more ranks on a node than GPUs).

    NCCL refuses two ranks on one GPU; Gloo then carries the CUDA tensors instead (through
    host memory: slower, but it lets a study or a test run more processes than GPUs).
    """
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    shared = node.size > torch.cuda.device_count()
    node.Free()
    return bool(comm.allreduce(shared, op=MPI.LOR))


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
