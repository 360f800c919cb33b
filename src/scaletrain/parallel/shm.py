"""Memory that a parameter server and its clients on the same node both map.

A client whose server runs on its node writes its payload into a slot of its own and reads
the server's reply from another, instead of sending either as a message: a message over
shared memory is copied twice (into the library's buffers and out of them) unless the
library has a single-copy mechanism, and on the CPU those copies slow the training thread
beside them (docs/performance.md). Notices that a payload or a reply is ready still travel
as small messages, which also order the writes: the writer makes its writes visible
(`MPI_Win_sync`) before its notice leaves, the reader after the notice has arrived.

One MPI window over the node's processes (allocating it is collective there): every process
on the node takes part, each giving room for its own slots (none where it has no server on
the node)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scaletrain.errors import TrainingError

# where MPI libraries keep the memory processes share; a full one kills a process (SIGBUS)
# when it first touches a page, so a slot is taken only where there is room for every
# process of the node
SHM_DIR = "/dev/shm"


@dataclass
class Slot:
    """A client's two vectors in shared memory: what it sends and what its server replies."""

    payload: torch.Tensor
    reply: torch.Tensor
    window: Any

    def publish(self) -> None:
        """Our writes to the slot, visible to the other side (before sending the notice)."""
        self.window.Sync()

    def observe(self) -> None:
        """The other side's writes, visible to us (after receiving its notice)."""
        self.window.Sync()


class NodeSlots:
    """The shared window of this node's processes, with a slot for this process if its
    server (`server`, a rank of `comm`; -1 for none) runs on the node."""

    def __init__(self, comm: Any, server: int, size: int, enabled: bool = True) -> None:
        from mpi4py import MPI

        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        # the node's processes by their rank in `comm`, in node-rank order
        self.members = self.node.allgather(comm.rank)
        self.size = size
        wanted = enabled and server in self.members
        # a client without a slot exchanges by messages: its server sees an empty segment
        mine = 2 * size if wanted and has_room(4 * 2 * size * self.node.size) else 0
        try:
            self.window = MPI.Win.Allocate_shared(4 * mine, 4, comm=self.node)
        except MPI.Exception as exc:
            raise TrainingError(
                f"could not allocate shared memory for the parameter server's exchanges "
                f"({exc.Get_error_string()}); set parallel.shared_memory: false"
            ) from None
        self.window.Lock_all(MPI.MODE_NOCHECK)  # loads and stores, ordered by window syncs

    def slot(self, rank: int) -> Slot | None:
        """The slot of process `rank` (of `comm`): our own, or a client's; None where that
        process has none (another node, shared memory off, or no server)."""
        if rank not in self.members:
            return None
        memory, _ = self.window.Shared_query(self.members.index(rank))
        if len(memory) == 0:
            return None
        vector = torch.from_numpy(np.frombuffer(memory, dtype=np.float32))
        return Slot(vector[: self.size], vector[self.size : 2 * self.size], self.window)

    def close(self) -> None:
        """End this process's access (freeing the window would wait for every process on
        the node, some of which may be gone: the memory goes with the job)."""
        self.window.Unlock_all()


def has_room(nbytes: int, where: str | None = None) -> bool:
    """Whether `where` (SHM_DIR) has `nbytes` free (True where it does not exist)."""
    try:
        stat = os.statvfs(where or SHM_DIR)
    except OSError:
        return True
    return stat.f_bavail * stat.f_frsize >= nbytes
