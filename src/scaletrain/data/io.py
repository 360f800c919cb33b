"""HDF5 shower files in the 3DGAN layout: atomic writes, checks, block reads, path specs.

Layout: ECAL float32 (N, 25, 25, 25) GeV, energy float32 (N,) (also (N, 1) on read), theta
float32 (N,), pdg int32 (N,), and a `metadata` group whose attributes record the version,
seed, particle, parameters (JSON) and creation time.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from scaletrain.errors import DataError

KEYS = ("ECAL", "energy", "theta", "pdg")
_DTYPES = {"ECAL": np.float32, "energy": np.float32, "theta": np.float32, "pdg": np.int32}
_DEFAULTS = {"theta": np.pi / 2, "pdg": 11}  # perpendicular electrons, as the 3DGAN data


@dataclass(frozen=True)
class FileInfo:
    """What check_file found in a valid shower file."""

    path: Path
    n: int
    shape: tuple[int, ...]  # of one shower image
    has_theta: bool
    has_pdg: bool
    metadata: dict = field(default_factory=dict)


class ShowerWriter:
    """Write one file block by block into `path.tmp`; `close()` renames it into place.

    Nothing appears at `path` unless close() is reached: on an exception inside a `with`
    block, or on abort(), the temporary file is removed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        *,
        shape: Sequence[int] = (25, 25, 25),
        metadata: dict | None = None,
        compression: str | None = None,
    ) -> None:
        if compression not in (None, "gzip", "lzf"):
            raise DataError(f"compression must be None, 'gzip' or 'lzf', not {compression!r}")
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.n = n
        self._file = h5py.File(self.tmp, "w")
        try:
            for key in KEYS:
                dims = (n, *shape) if key == "ECAL" else (n,)
                chunks = (1, *shape) if key == "ECAL" else None  # one shower per chunk
                self._file.create_dataset(
                    key,
                    shape=dims,
                    dtype=_DTYPES[key],
                    chunks=chunks if n > 0 else None,
                    compression=compression if key == "ECAL" and n > 0 else None,
                )
            _write_metadata(self._file.create_group("metadata"), metadata or {})
        except BaseException:
            self.abort()
            raise

    def write(self, start: int, block: dict[str, np.ndarray]) -> None:
        """Write rows [start, start + len(block)) of every key present in `block`."""
        m = len(block["ECAL"])
        if start < 0 or start + m > self.n:
            raise DataError(f"{self.path}: rows {start}:{start + m} outside 0:{self.n}")
        for key, value in block.items():
            ds = self._file[key]
            ds[start : start + m] = np.asarray(value, dtype=_DTYPES[key]).reshape(m, *ds.shape[1:])

    def close(self) -> Path:
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _write_metadata(group: h5py.Group, metadata: dict) -> None:
    from scaletrain import __version__

    attrs = {"scaletrain_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    attrs.update(metadata)
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)):
            group.attrs[key] = json.dumps(value)
        elif value is not None:
            group.attrs[key] = value


def write_showers(
    path: str | os.PathLike,
    showers: dict[str, np.ndarray],
    metadata: dict | None = None,
    *,
    compression: str | None = None,
) -> Path:
    """Write a whole set of showers atomically; theta and pdg get their defaults if absent."""
    if "ECAL" not in showers or "energy" not in showers:
        raise DataError(f"{path}: showers need ECAL and energy")
    ecal = np.asarray(showers["ECAL"])
    n = len(ecal)
    block = {"ECAL": ecal, "energy": np.asarray(showers["energy"]).reshape(n)}
    for key in ("theta", "pdg"):
        block[key] = showers[key] if key in showers else np.full(n, _DEFAULTS[key])
    with ShowerWriter(
        path, n, shape=ecal.shape[1:], metadata=metadata, compression=compression
    ) as w:
        if n:
            w.write(0, block)
    return Path(path)


def check_file(path: str | os.PathLike) -> FileInfo:
    """Check the layout of a shower file; DataError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            return _check_open(path, f)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}"
        ) from None


def _check_open(path: Path, f: h5py.File) -> FileInfo:
    for key in ("ECAL", "energy"):
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DataError(
                f"{path}: missing dataset {key!r} (found: {', '.join(f.keys()) or 'none'})"
            )
    ecal, energy = f["ECAL"], f["energy"]
    if ecal.ndim != 4 or not np.issubdtype(ecal.dtype, np.floating):
        raise DataError(f"{path}: ECAL must be float (N, X, Y, Z), got {ecal.dtype} {ecal.shape}")
    n = ecal.shape[0]
    expected = {"energy": [(n,), (n, 1)], "theta": [(n,)], "pdg": [(n,)]}
    for key, shapes in expected.items():
        if key not in f:
            continue
        ds = f[key]
        kind = np.integer if key == "pdg" else np.floating
        if not isinstance(ds, h5py.Dataset) or not np.issubdtype(ds.dtype, kind):
            raise DataError(f"{path}: {key} must be a {kind.__name__} dataset, got {_describe(ds)}")
        if ds.shape not in shapes:
            raise DataError(
                f"{path}: {key} has shape {ds.shape}, expected {shapes[0]} to match ECAL's N={n}"
            )
    if n == 0:
        raise DataError(f"{path}: empty file (N = 0)")
    # reading the last row catches files whose header survived a truncation
    ecal[n - 1]
    energy[n - 1]
    metadata = dict(f["metadata"].attrs) if "metadata" in f else {}
    for key, value in metadata.items():
        if isinstance(value, bytes):
            metadata[key] = value.decode()
        if key == "parameters" and isinstance(metadata[key], str):
            metadata[key] = json.loads(metadata[key])
        elif isinstance(value, np.generic):
            metadata[key] = value.item()
    return FileInfo(path, n, tuple(ecal.shape[1:]), "theta" in f, "pdg" in f, metadata)


def _describe(obj: object) -> str:
    return f"{obj.dtype}" if isinstance(obj, h5py.Dataset) else type(obj).__name__


def read_showers(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    keys: Iterable[str] = KEYS,
) -> dict[str, np.ndarray]:
    """Rows [start, stop) of a file, in the canonical dtypes; absent theta/pdg get defaults.

    Raises DataError if ECAL, energy or theta hold non-finite values in the rows read.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            n = f["ECAL"].shape[0]
            stop = n if stop is None else min(stop, n)
            for key in keys:
                if key in f:
                    out[key] = np.asarray(f[key][start:stop], dtype=_DTYPES[key])
                elif key in _DEFAULTS:
                    out[key] = np.full(max(stop - start, 0), _DEFAULTS[key], _DTYPES[key])
                else:
                    raise DataError(f"{path}: missing dataset {key!r}")
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read rows {start}:{stop}: {exc}") from None
    if "energy" in out:
        out["energy"] = out["energy"].reshape(-1)
    for key in ("ECAL", "energy", "theta"):
        if key in out and not np.all(np.isfinite(out[key])):
            bad = np.flatnonzero(~np.isfinite(out[key].reshape(len(out[key]), -1)).all(axis=1))
            raise DataError(
                f"{path}: non-finite {key} in rows {start}:{stop} (first at row {start + bad[0]})"
            )
    return out


def expand_paths(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by a path, a directory (its *.h5, sorted), a glob, or a list of these."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.h5"))
            if not found:
                raise DataError(f"{path}: directory holds no *.h5 files")
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text))
            if not found:
                raise DataError(f"{text}: no files match")
        elif path.exists():
            found = [path]
        else:
            raise DataError(f"{path}: no such file or directory")
        paths.extend(found)
    if not paths:
        raise DataError("no data files given")
    return paths
