"""A user's data set (arrays or a torch Dataset) behind the same interface as ShowerData.

`data.source: "package.module:make_data"` names a function called with `data.args`; it returns

- a mapping of names to arrays (numpy, torch, lists) with the same first dimension, e.g.
  `{"x": images, "label": classes}` — the names become the keys of every batch;
- a pair `(x, y)`, whose batches hold "x" and "y";
- or a map-style `torch.utils.data.Dataset` (`len` and `[i]`); items that are mappings keep
  their keys, pairs become "x" and "y", single tensors "x". Items are read lazily, per batch.

Splits are deterministic in the seed: rows are permuted once; the first `val_fraction` of
them (or fold `fold` of `n_folds`) are validation. Each epoch permutes the training rows again
(seeded by epoch) and gives each rank a contiguous equal slice, as ShowerData does. float64
becomes float32 and integer labels (one dimension) int64, the types models and losses expect.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaletrain.errors import ConfigError, DataError


def open_data(cfg: Any, *, n_folds: int = 0, fold: int = 0) -> Any:
    """The data set a config names: `data.source` (ArrayData) or the showers of `data.path`."""
    data = cfg.data
    if data.source:
        return ArrayData.from_source(
            data.source, data.args, val_fraction=data.val_fraction, n_folds=n_folds, fold=fold,
            seed=cfg.run.seed, max_rows=data.max_showers,
        )  # fmt: skip
    from scaletrain.data.dataset import ShowerData

    return ShowerData.open(
        data.path, val_fraction=data.val_fraction, n_folds=n_folds, fold=fold,
        seed=cfg.run.seed, max_showers=data.max_showers,
    )  # fmt: skip


class _Arrays:
    """Rows held in memory as tensors."""

    def __init__(self, columns: dict[str, torch.Tensor]) -> None:
        self.columns = columns
        self.n = _common_length({k: v.shape[0] for k, v in columns.items()})

    def take(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(index)
        return {k: v[rows] for k, v in self.columns.items()}


class _Items:
    """Rows of a map-style Dataset, read item by item and collated per batch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.n = len(dataset)
        if self.n:
            self.take(np.array([0]))  # the first item must collate: fail now, not mid-epoch

    def take(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        from torch.utils.data import default_collate

        try:
            batch = default_collate([self.dataset[int(i)] for i in index])
        except (TypeError, RuntimeError) as exc:
            raise DataError(f"data.source: dataset items do not form a batch ({exc})") from None
        return {k: _tensor(k, v) for k, v in _named(batch, "dataset items").items()}


class ArrayData:
    """A user's rows with a deterministic train/val (or K-fold) split."""

    def __init__(
        self, rows: _Arrays | _Items, *, val_fraction: float = 0.1, n_folds: int = 0,
        fold: int = 0, seed: int = 0, max_rows: int | None = None,
        paths: list[Path] | None = None,
    ) -> None:  # fmt: skip
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if n_folds > 1 and not 0 <= fold < n_folds:
            raise ConfigError(f"fold must be in [0, {n_folds}), got {fold}")
        n = rows.n if max_rows is None else min(rows.n, max_rows)
        if n == 0:
            raise DataError("data.source returned no rows")
        self.rows = rows
        self.seed = seed
        self.n_total = n
        self.paths = paths or []  # for provenance: the module that made the data
        order = np.random.default_rng(np.random.SeedSequence([seed, 0xA77])).permutation(n)
        if n_folds > 1:
            in_val = np.arange(n) * n_folds // n == fold
        else:
            in_val = np.arange(n) < round(val_fraction * n)
        self._index = {"train": np.sort(order[~in_val]), "val": np.sort(order[in_val])}

    @classmethod
    def from_arrays(cls, source: Any, **kw: Any) -> ArrayData:
        """From a mapping of arrays, an (x, y) pair or a map-style torch Dataset."""
        return cls(_rows(source), **kw)

    @classmethod
    def from_source(cls, spec: str, args: dict[str, Any] | None = None, **kw: Any) -> ArrayData:
        """Call `package.module:function(**args)` and split what it returns."""
        from scaletrain.imports import check_call, import_callable

        make = import_callable(spec, "data.source")
        args = dict(args or {})
        check_call(make, "data.source", spec, 0, args, f"the keyword arguments data.args {args}")
        try:
            source = make(**args)
        except (ConfigError, DataError):
            raise
        except Exception as exc:
            raise DataError(f"data.source {spec!r} failed: {type(exc).__name__}: {exc}") from None
        try:
            rows = _rows(source)
        except DataError as exc:
            raise DataError(f"data.source {spec!r}: {exc}") from None
        return cls(rows, paths=_module_file(make), **kw)

    def split(self, name: str, *, rank: int = 0, world_size: int = 1) -> ArraySplit:
        """This rank's share of the "train" or "val" split."""
        if name not in self._index:
            raise ConfigError(f"split must be 'train' or 'val', not {name!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world of size {world_size}")
        return ArraySplit(self.rows, self._index[name], rank, world_size, self.seed)


class ArraySplit:
    """One rank's view of a split; every rank gets the same number of rows."""

    def __init__(
        self, rows: _Arrays | _Items, index: np.ndarray, rank: int, world_size: int, seed: int
    ) -> None:
        self._rows = rows
        self._index = index
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.n_split = len(index)
        # the remainder is dropped so that all ranks run the same number of batches
        self.n = self.n_split // world_size

    def num_batches(self, batch_size: int, drop_last: bool = True) -> int:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        return self.n // batch_size if drop_last else -(-self.n // batch_size)

    def _mine(self, epoch: int, shuffle: bool) -> np.ndarray:
        order = self._index
        if shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0x0DE]))
            order = order[rng.permutation(len(order))]
        return order[self.rank * self.n : (self.rank + 1) * self.n]

    def batches(
        self, batch_size: int, *, epoch: int = 0, shuffle: bool = True, drop_last: bool = True,
        start_batch: int = 0,
    ) -> Iterator[dict[str, torch.Tensor]]:  # fmt: skip
        """Batches of this rank's rows; the order depends only on (seed, epoch, rank, world)."""
        mine = self._mine(epoch, shuffle)
        for b in range(start_batch, self.num_batches(batch_size, drop_last)):
            yield self._rows.take(mine[b * batch_size : (b + 1) * batch_size])

    def arrays(self, max_n: int | None = None) -> dict[str, np.ndarray]:
        """This rank's rows (or the first max_n of them) in data order, as numpy arrays."""
        mine = self._mine(0, shuffle=False)[:max_n]
        if len(mine) == 0:
            raise DataError("the split is empty (val_fraction = 0 or too little data?)")
        return {k: v.numpy() for k, v in self._rows.take(mine).items()}


# ---------------------------------------------------------------------------- conversion


def _rows(source: Any) -> _Arrays | _Items:
    from torch.utils.data import Dataset, TensorDataset

    if isinstance(source, TensorDataset):
        source = tuple(source.tensors)
    if isinstance(source, Dataset):
        if not hasattr(source, "__len__"):
            raise DataError("an IterableDataset has no length; return a map-style Dataset")
        return _Items(source)
    columns = _named(source, "the returned value")
    return _Arrays({k: _tensor(k, v) for k, v in columns.items()})


def _named(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        if not value or not all(isinstance(k, str) for k in value):
            raise DataError(f"{what}: a mapping needs string keys and at least one entry")
        return dict(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return {"x": value[0], "y": value[1]}
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return {"x": value}
    raise DataError(
        f"{what} must be a mapping of arrays, an (x, y) pair or a torch Dataset, "
        f"got {type(value).__name__}"
    )


def _tensor(key: str, value: Any) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{key!r} is not an array ({exc})") from None
    if tensor.ndim == 0:
        raise DataError(f"{key!r} is a scalar; every entry needs one row per example")
    if tensor.dtype == torch.float64:
        return tensor.float()
    if tensor.ndim == 1 and not tensor.is_floating_point() and tensor.dtype != torch.bool:
        return tensor.long()  # class labels, as losses want them
    return tensor


def _common_length(lengths: dict[str, int]) -> int:
    if len(set(lengths.values())) > 1:
        raise DataError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def _module_file(fn: Any) -> list[Path]:
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return []
    return [Path(path)] if path and Path(path).is_file() else []
