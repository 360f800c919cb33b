"""Fast generation on a GPU: the re-expressed generator in bf16, compiled, replayed as a graph.

`FastGenerate(generator, batch_size)` is a callable latent -> showers that equals
`generator.eval()(latent)` within bf16 rounding. It runs at one fixed batch size (a short
last batch is padded, so nothing recompiles), with torch.compile, cudnn autotuning,
channels-last 3-D activations and, on CUDA, one CUDA graph per call. `stream_to_writer`
feeds a `ShowerWriter` from it while the GPU keeps generating: device-to-host copies into
pinned buffers, and a writer thread that does the HDF5 work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from scaletrain.models.fast_generator import FastGenerator


class FastGenerate:
    """Latent (n <= batch_size, latent) -> showers (n, 1, 25, 25, 25) in float32."""

    def __init__(
        self,
        generator: nn.Module,
        batch_size: int,
        *,
        dtype: torch.dtype = torch.bfloat16,
        compile: bool = True,
        cuda_graph: bool = True,
        compile_mode: str | None = None,
    ) -> None:
        ref = next(generator.parameters())
        self.device = ref.device
        self.batch_size = batch_size
        self.latent_size = generator.latent_size
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        self.model = FastGenerator(generator, frozen=True, dtype=dtype, out_dtype=torch.float32)
        fn: Callable[[torch.Tensor], torch.Tensor] = self.model
        if compile:
            fn = torch.compile(self.model, mode=compile_mode, fullgraph=True, dynamic=False)
        self._fn = fn
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in = torch.zeros(batch_size, self.latent_size, device=self.device)
        self._static_out: torch.Tensor | None = None
        if cuda and cuda_graph:
            self._capture()

    @torch.no_grad()
    def _capture(self) -> None:
        # warm up on a side stream (compilation, autotuning, cudnn plans), then capture
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._static_in.normal_()
            for _ in range(3):
                self._fn(self._static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._static_out = self._fn(self._static_in)

    @torch.no_grad()
    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        """Showers for `latent`; with a CUDA graph the result is overwritten by the next call."""
        n = latent.shape[0]
        if n > self.batch_size:
            raise ValueError(f"{n} latent vectors, more than the batch size {self.batch_size}")
        if self._graph is None:
            if n < self.batch_size:  # keep one shape: no recompilation for the last batch
                pad = latent.new_zeros(self.batch_size - n, latent.shape[1])
                return self._fn(torch.cat([latent, pad]))[:n]
            return self._fn(latent)
        self._static_in[:n].copy_(latent)
        self._graph.replay()
        assert self._static_out is not None
        return self._static_out[:n]


def stream_to_writer(
    generate: Callable[[int, int], tuple[torch.Tensor, np.ndarray]],
    write: Callable[[int, np.ndarray, np.ndarray], None],
    n: int,
    batch_size: int,
    advance: Callable[[int], None] = lambda m: None,
    buffers: int = 3,
    pinned: bool = True,
) -> None:
    """Generate [start, start + batch) blocks on the GPU while a thread writes earlier ones.

    generate(start, m) -> (showers on the device, energies); write(start, showers, energies)
    runs on the writer thread. Up to `buffers` host blocks are in flight, page-locked if
    `pinned` (generation on a GPU; pinning starts CUDA, which a CPU run must not).
    """
    free: queue.Queue = queue.Queue()
    todo: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def writer() -> None:
        while True:
            item = todo.get()
            if item is None:
                return
            start, m, host, energies, done = item
            try:
                if not failure:
                    done.synchronize()
                    write(start, host[:m].numpy(), energies)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)
            free.put(host)

    thread = threading.Thread(target=writer, name="shower-writer", daemon=True)
    thread.start()
    pinned = pinned and torch.cuda.is_available()
    for _ in range(buffers):
        free.put(torch.empty((batch_size, 25, 25, 25), dtype=torch.float32, pin_memory=pinned))
    try:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            images, energies = generate(start, m)
            host = free.get()
            if failure:
                break
            host[:m].copy_(images.reshape(m, 25, 25, 25), non_blocking=True)
            done = torch.cuda.Event() if images.is_cuda else _Done()
            done.record()
            todo.put((start, m, host, energies, done))
            advance(m)
    finally:
        todo.put(None)
        thread.join()
    if failure:
        raise failure[0]


class _Done:
    """Stands in for a CUDA event on the CPU, where the copy has already happened."""

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass
