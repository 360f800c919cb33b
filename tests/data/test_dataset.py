from pathlib import Path

import numpy as np
import pytest

from scaletrain.data.dataset import ShowerData
from scaletrain.errors import ConfigError, DataError

N_TOTAL = 700 + 450 + 333


def _ids(split, **kw) -> np.ndarray:
    return np.concatenate([b["energy"].numpy() for b in split.batches(16, **kw)]).astype(int)


def test_train_and_val_are_disjoint_and_cover_everything(indexed_files) -> None:
    data = ShowerData.open(indexed_files, val_fraction=0.2, seed=3)
    assert data.n_total == N_TOTAL
    train = data.split("train").arrays()["energy"].astype(int)
    val = data.split("val").arrays()["energy"].astype(int)
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(N_TOTAL))
    assert abs(len(val) - 0.2 * N_TOTAL) < 0.02 * N_TOTAL  # split units are ~1/64 of the data


def test_split_depends_on_seed_only(indexed_files) -> None:
    def val(seed):
        return ShowerData.open(indexed_files, seed=seed).split("val").arrays()["energy"]

    np.testing.assert_array_equal(val(1), val(1))
    assert not np.array_equal(val(1), val(2))


def test_rank_shards_are_disjoint_and_equal(indexed_files) -> None:
    data = ShowerData.open(indexed_files, val_fraction=0.1)
    shards = [data.split("train", rank=r, world_size=3) for r in range(3)]
    assert len({s.n for s in shards}) == 1
    for epoch in (0, 1):
        ids = [_ids(s, epoch=epoch, drop_last=False) for s in shards]
        assert all(len(i) == shards[0].n for i in ids)
        assert len(set(np.concatenate(ids))) == 3 * shards[0].n


def test_batches_are_deterministic_per_epoch_and_shuffled(indexed_files) -> None:
    split = ShowerData.open(indexed_files, seed=5).split("train", rank=1, world_size=2)
    first = _ids(split, epoch=0)
    np.testing.assert_array_equal(first, _ids(split, epoch=0))
    assert not np.array_equal(first, _ids(split, epoch=1))
    assert not np.array_equal(first, np.sort(first))  # rows are shuffled
    assert len(first) == split.num_batches(16) * 16
    in_order = _ids(split, shuffle=False, drop_last=False)
    np.testing.assert_array_equal(in_order, split.arrays()["energy"].astype(int))


def test_start_batch_equals_skipping(indexed_files) -> None:
    split = ShowerData.open(indexed_files, chunk_size=64).split("train")
    full = list(split.batches(24, epoch=2))
    resumed = list(split.batches(24, epoch=2, start_batch=17))
    assert len(resumed) == len(full) - 17
    for a, b in zip(full[17:], resumed, strict=True):
        for key in a:
            assert (a[key] == b[key]).all()


def test_batch_layout(indexed_files) -> None:
    batch = next(ShowerData.open(indexed_files).split("train").batches(8))
    assert batch["ECAL"].shape == (8, 2, 2, 2) and str(batch["ECAL"].dtype) == "torch.float32"
    assert str(batch["energy"].dtype) == "torch.float32" and batch["theta"].shape == (8,)
    assert str(batch["pdg"].dtype) == "torch.int64"


def test_k_folds_are_disjoint_and_cover_everything(indexed_files) -> None:
    folds = []
    for k in range(3):
        data = ShowerData.open(indexed_files, n_folds=3, fold=k, seed=1)
        val = set(data.split("val").arrays()["energy"].astype(int))
        train = set(data.split("train").arrays()["energy"].astype(int))
        assert not val & train and len(val | train) == N_TOTAL
        folds.append(val)
    assert sum(len(f) for f in folds) == N_TOTAL
    assert not (folds[0] & folds[1] or folds[1] & folds[2] or folds[0] & folds[2])


def test_lazy_reading_matches_cached(indexed_files) -> None:
    lazy = ShowerData.open(indexed_files, cache=False, chunk_size=32).split("train")
    cached = ShowerData.open(indexed_files, cache=True, chunk_size=32).split("train")
    np.testing.assert_array_equal(_ids(lazy, epoch=4), _ids(cached, epoch=4))


def test_max_showers_and_bad_arguments(tmp_path: Path, make_files) -> None:
    paths = make_files(tmp_path, [100, 100])
    assert ShowerData.open(paths, max_showers=150).n_total == 150
    with pytest.raises(ConfigError, match="fold"):
        ShowerData.open(paths, n_folds=3, fold=3)
    with pytest.raises(ConfigError, match="split"):
        ShowerData.open(paths).split("test")
    (tmp_path / "bad.h5").write_text("x")
    with pytest.raises(DataError, match=r"bad\.h5"):
        ShowerData.open(tmp_path)
