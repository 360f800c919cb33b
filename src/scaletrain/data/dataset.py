"""Lazy, chunked, deterministic access to showers spread over many HDF5 files.

The files are concatenated into one index space cut into *units*: contiguous row ranges of
one file (≤ chunk_size rows). Train/val splits and K folds are sets of units chosen by a seeded
permutation; an epoch orders the split's units (seeded by epoch), gives each rank a contiguous
equal slice of that order, and shuffles rows only inside windows of a few chunks, so reads stay
contiguous and at most two windows are in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scaletrain.errors import ConfigError, DataError

from .io import check_file, expand_paths, read_showers

CHUNK_SIZE = 1024  # rows per read
WINDOW_CHUNKS = 2  # rows are shuffled within windows of this many chunks
AUTO_CACHE_BYTES = 256 * 2**20  # smaller data sets are read once and kept in memory


@dataclass(frozen=True)
class _Unit:
    file: int
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start


class _Reader:
    """Reads row ranges of the files, or slices them from memory when caching."""

    def __init__(self, paths: list[Path], cache: bool) -> None:
        self.paths = paths
        self.cache = cache
        self._memory: dict[int, dict[str, np.ndarray]] = {}

    def read(self, unit: _Unit) -> dict[str, np.ndarray]:
        if not self.cache:
            return read_showers(self.paths[unit.file], unit.start, unit.stop)
        if unit.file not in self._memory:
            self._memory[unit.file] = read_showers(self.paths[unit.file])
        return {k: v[unit.start : unit.stop] for k, v in self._memory[unit.file].items()}

    def preload(self, counts: list[int]) -> None:
        """Read (and so check) the used rows now: bad values fail before any training starts."""
        for index, n in enumerate(counts):
            if index not in self._memory and n > 0:
                self._memory[index] = read_showers(self.paths[index], 0, n)

    def read_many(self, units: Iterable[_Unit]) -> dict[str, np.ndarray]:
        parts = [self.read(u) for u in units]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class ShowerData:
    """The showers of a set of files, with a deterministic train/val (or K-fold) split."""

    def __init__(
        self, paths: list[Path], counts: list[int], units: dict[str, list[_Unit]], seed: int,
        cache: bool, chunk_size: int,
    ) -> None:  # fmt: skip
        self.paths = paths
        self.counts = counts
        self.n_total = sum(counts)
        self.seed = seed
        self._units = units
        self._reader = _Reader(paths, cache)
        self._chunk_size = chunk_size

    @classmethod
    def open(
        cls,
        spec: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        val_fraction: float = 0.1,
        n_folds: int = 0,
        fold: int = 0,
        seed: int = 0,
        max_showers: int | None = None,
        cache: bool | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> ShowerData:
        """Check every file, then split. cache=None caches data sets under 256 MiB."""
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if n_folds > 1 and not 0 <= fold < n_folds:
            raise ConfigError(f"fold must be in [0, {n_folds}), got {fold}")
        paths = expand_paths(spec)
        infos = [check_file(p) for p in paths]
        shapes = {info.shape for info in infos}
        if len(shapes) > 1:
            raise DataError(f"files have different shower shapes: {sorted(shapes)}")
        counts = [info.n for info in infos]
        if max_showers is not None:
            counts = _truncate(counts, max_showers)
        n_total = sum(counts)
        if n_total == 0:
            raise DataError("no showers selected (max_showers = 0?)")
        units = _make_units(counts, chunk_size)
        membership = _assign(units, n_total, val_fraction, n_folds, fold, seed)
        split_units = {
            "train": [u for u, m in zip(units, membership, strict=True) if not m],
            "val": [u for u, m in zip(units, membership, strict=True) if m],
        }
        if cache is None:
            cache = n_total * int(np.prod(infos[0].shape)) * 4 <= AUTO_CACHE_BYTES
        data = cls(paths, counts, split_units, seed, cache, chunk_size)
        if cache:
            data._reader.preload(counts)
        return data

    def split(self, name: str, *, rank: int = 0, world_size: int = 1) -> ShowerSplit:
        """This rank's share of the "train" or "val" split."""
        if name not in self._units:
            raise ConfigError(f"split must be 'train' or 'val', not {name!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world of size {world_size}")
        return ShowerSplit(
            self._reader, self._units[name], rank, world_size, self.seed, self._chunk_size
        )


def _truncate(counts: list[int], limit: int) -> list[int]:
    out, left = [], max(limit, 0)
    for c in counts:
        out.append(min(c, left))
        left -= out[-1]
    return out


def _make_units(counts: list[int], chunk_size: int) -> list[_Unit]:
    # ≥ ~64 units even for small data, so that fractions and folds can be honoured
    size = int(np.clip(-(-sum(counts) // 64), 1, chunk_size))
    return [_Unit(f, s, min(s + size, c)) for f, c in enumerate(counts) for s in range(0, c, size)]


def _assign(
    units: list[_Unit], n_total: int, val_fraction: float, n_folds: int, fold: int, seed: int
) -> np.ndarray:
    """Boolean per unit: in the validation split."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1])).permutation(len(units))
    sizes = np.array([units[i].n for i in order])
    starts = np.cumsum(sizes) - sizes  # position of each unit in the permuted concatenation
    if n_folds > 1:
        chosen = (starts * n_folds // n_total) == fold
    else:
        n_val = round(val_fraction * n_total)
        chosen = starts < n_val
    member = np.zeros(len(units), dtype=bool)
    member[order[chosen]] = True
    return member


class ShowerSplit:
    """One rank's view of a split; every rank gets the same number of showers."""

    def __init__(
        self, reader: _Reader, units: list[_Unit], rank: int, world_size: int, seed: int,
        chunk_size: int,
    ) -> None:  # fmt: skip
        self._reader = reader
        self._units = units
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.n_split = sum(u.n for u in units)
        # the remainder is dropped so that all ranks run the same number of batches
        self.n = self.n_split // world_size
        self._window = WINDOW_CHUNKS * chunk_size

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        return self.n // batch_size if drop_last else -(-self.n // batch_size)

    def _order(self, epoch: int, shuffle: bool) -> list[_Unit]:
        if not shuffle:
            return self._units
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x0DE]))
        return [self._units[i] for i in rng.permutation(len(self._units))]

    def _pieces(self, order: list[_Unit], lo: int, hi: int) -> list[_Unit]:
        """The row ranges of split positions [lo, hi) of this rank, in `order`."""
        lo, hi = lo + self.rank * self.n, hi + self.rank * self.n
        pieces, pos = [], 0
        for u in order:
            a, b = max(lo, pos), min(hi, pos + u.n)
            if a < b:
                pieces.append(_Unit(u.file, u.start + a - pos, u.start + b - pos))
            pos += u.n
            if pos >= hi:
                break
        return pieces

    def _window_rows(self, order: list[_Unit], w: int, epoch: int, shuffle: bool) -> dict:
        lo, hi = w * self._window, min((w + 1) * self._window, self.n)
        rows = self._reader.read_many(self._pieces(order, lo, hi))
        if shuffle:
            key = [self.seed, epoch, self.rank, self.world_size, w]
            perm = np.random.default_rng(np.random.SeedSequence(key)).permutation(hi - lo)
            rows = {k: v[perm] for k, v in rows.items()}
        return rows

    def batches(
        self,
        batch_size: int,
        *,
        epoch: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        start_batch: int = 0,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ECAL (B, X, Y, Z), energy, theta (B,) float32 and pdg (B,) int64.

        The order depends only on (seed, epoch, rank, world_size); start_batch resumes
        mid-epoch without reading the skipped windows.
        """
        order = self._order(epoch, shuffle)
        windows: dict[int, dict[str, np.ndarray]] = {}
        for b in range(start_batch, self.num_batches(batch_size, drop_last)):
            lo, hi = b * batch_size, min((b + 1) * batch_size, self.n)
            parts = []
            for w in range(lo // self._window, (hi - 1) // self._window + 1):
                if w not in windows:  # windows only move forward: forget the older ones
                    windows = {w: self._window_rows(order, w, epoch, shuffle)}
                a = max(lo - w * self._window, 0)
                c = min(hi - w * self._window, self._window)
                parts.append({k: v[a:c] for k, v in windows[w].items()})
            yield _to_torch({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})

    def arrays(self, max_n: int | None = None) -> dict[str, np.ndarray]:
        """This rank's showers (or the first max_n of them) in file order, as numpy arrays."""
        n = self.n if max_n is None else min(max_n, self.n)
        if n == 0:
            raise DataError("the split is empty (val_fraction = 0 or too little data?)")
        return self._reader.read_many(self._pieces(self._units, 0, n))


def _to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    out["pdg"] = out["pdg"].long()
    return out
