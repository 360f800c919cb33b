from pathlib import Path

import h5py
import numpy as np
import pytest

from scaletrain.data import io
from scaletrain.data.io import check_file, expand_paths, read_showers, write_showers
from scaletrain.errors import DataError


def _showers(n: int = 5, shape=(25, 25, 25)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "ECAL": rng.random((n, *shape), dtype=np.float32),
        "energy": rng.uniform(2, 500, n).astype(np.float32),
        "theta": np.full(n, 1.2, np.float32),
        "pdg": np.full(n, 22, np.int32),
    }


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path: Path) -> None:
    showers = _showers()
    path = write_showers(tmp_path / "a.h5", showers, {"seed": 7, "parameters": {"x": [1, 2]}},
                         compression="gzip")  # fmt: skip
    info = check_file(path)
    assert (info.n, info.shape, info.has_theta, info.has_pdg) == (5, (25, 25, 25), True, True)
    assert info.metadata["seed"] == 7 and info.metadata["parameters"] == {"x": [1, 2]}
    assert "scaletrain_version" in info.metadata and "created" in info.metadata
    back = read_showers(path)
    for key, value in showers.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)
    part = read_showers(path, 1, 3, keys=("energy",))
    np.testing.assert_array_equal(part["energy"], showers["energy"][1:3])


def test_missing_theta_and_pdg_read_as_perpendicular_electrons(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((3, 25, 25, 25), np.float32)
        f["energy"] = np.ones((3, 1), np.float32)  # the (N, 1) layout of some 3DGAN files
    info = check_file(path)
    assert not info.has_theta and not info.has_pdg
    back = read_showers(path)
    assert back["energy"].shape == (3,)
    np.testing.assert_allclose(back["theta"], np.pi / 2, rtol=1e-6)
    assert back["pdg"].tolist() == [11, 11, 11]


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path, monkeypatch) -> None:
    def explode(self, start, block):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.ShowerWriter, "write", explode)
    with pytest.raises(RuntimeError):
        write_showers(tmp_path / "a.h5", _showers())
    assert list(tmp_path.iterdir()) == []


def _bad_file(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
    return path


GOOD_ECAL = np.zeros((4, 25, 25, 25), np.float32)
GOOD_E = np.ones(4, np.float32)


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"energy": GOOD_E}, "missing dataset 'ECAL'"),
        ({"ECAL": GOOD_ECAL}, "missing dataset 'energy'"),
        ({"ECAL": np.zeros((4, 25, 25), np.float32), "energy": GOOD_E}, "ECAL must be float"),
        ({"ECAL": GOOD_ECAL.astype(np.int32), "energy": GOOD_E}, "ECAL must be float"),
        ({"ECAL": GOOD_ECAL, "energy": np.ones(3, np.float32)}, "energy has shape"),
        ({"ECAL": GOOD_ECAL, "energy": GOOD_E, "theta": np.ones(5, np.float32)}, "theta has"),
        ({"ECAL": GOOD_ECAL, "energy": GOOD_E, "pdg": np.ones(4, np.float32)}, "pdg must be"),
        ({"ECAL": GOOD_ECAL[:0], "energy": GOOD_E[:0]}, "empty file"),
    ],
)
def test_check_file_names_file_and_problem(tmp_path: Path, datasets, message) -> None:
    path = _bad_file(tmp_path / "bad.h5", **datasets)
    with pytest.raises(DataError, match=message) as err:
        check_file(path)
    assert str(path) in str(err.value)


def test_check_file_rejects_missing_non_hdf5_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        check_file(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        check_file(tmp_path / "text.h5")
    path = write_showers(tmp_path / "full.h5", _showers(20))
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.h5"):
        check_file(tmp_path / "cut.h5")


def test_non_finite_values_are_reported_with_rows(tmp_path: Path) -> None:
    showers = _showers(10)
    showers["ECAL"][7, 1, 2, 3] = np.nan
    path = write_showers(tmp_path / "nan.h5", showers)
    read_showers(path, 0, 5)  # the bad row is outside this block
    with pytest.raises(DataError, match=r"non-finite ECAL in rows 5:10 \(first at row 7\)"):
        read_showers(path, 5, 10)


def test_expand_paths_accepts_files_directories_globs_and_lists(tmp_path: Path) -> None:
    for name in ("b.h5", "a.h5", "c.txt"):
        (tmp_path / name).write_text("")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert expand_paths(tmp_path) == [a, b]
    assert expand_paths(str(tmp_path / "*.h5")) == [a, b]
    assert expand_paths([b, str(a)]) == [b, a]
    with pytest.raises(DataError, match="no files match"):
        expand_paths(str(tmp_path / "*.hdf5"))
    with pytest.raises(DataError, match="no such file"):
        expand_paths(tmp_path / "missing.h5")
