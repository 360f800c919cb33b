"""ArrayData: a user's arrays or Dataset split, shuffled and sharded as ShowerData does."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from scaletrain.data.arrays import ArrayData
from scaletrain.errors import DataError


def rows(n=100):
    return {"x": np.arange(n, dtype=np.float64)[:, None] * [1.0, -1.0], "id": np.arange(n)}


def ids(split, **kw):
    return torch.cat([b["id"] for b in split.batches(5, **kw)]).tolist()


def test_train_and_val_are_disjoint_cover_the_data_and_depend_only_on_the_seed():
    data = ArrayData.from_arrays(rows(), val_fraction=0.2, seed=3)
    train, val = ids(data.split("train"), shuffle=False), ids(data.split("val"), shuffle=False)
    assert len(val) == 20 and sorted(train + val) == list(range(100))
    again = ArrayData.from_arrays(rows(), val_fraction=0.2, seed=3)
    assert ids(again.split("val"), shuffle=False) == val
    other = ArrayData.from_arrays(rows(), val_fraction=0.2, seed=4)
    assert ids(other.split("val"), shuffle=False) != val


def test_k_folds_partition_the_data():
    folds = [
        set(ids(ArrayData.from_arrays(rows(), n_folds=4, fold=k).split("val"), shuffle=False))
        for k in range(4)
    ]
    assert [len(f) for f in folds] == [25] * 4
    assert set().union(*folds) == set(range(100))


def test_ranks_get_disjoint_equal_shards_reshuffled_every_epoch_and_resume_mid_epoch():
    data = ArrayData.from_arrays(rows(), val_fraction=0.0, seed=1)
    shards = [ids(data.split("train", rank=r, world_size=3), epoch=0) for r in range(3)]
    assert [len(s) for s in shards] == [30, 30, 30]  # 33 each, cut to whole batches of 5
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
    split = data.split("train", rank=1, world_size=3)
    assert ids(split, epoch=1) != shards[1]
    assert ids(split, epoch=0, start_batch=2) == shards[1][10:]


def test_float64_becomes_float32_and_labels_int64():
    batch = next(ArrayData.from_arrays(rows(), val_fraction=0.0).split("train").batches(4))
    assert batch["x"].dtype == torch.float32 and batch["id"].dtype == torch.int64
    assert ArrayData.from_arrays(rows()).split("val").arrays(3)["x"].shape == (3, 2)


class Pairs(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((3,), float(i)), i % 2


def test_a_torch_dataset_is_read_lazily_and_pairs_become_x_and_y():
    batch = next(ArrayData.from_arrays(Pairs(), val_fraction=0.0).split("train").batches(8))
    assert batch["x"].shape == (8, 3) and batch["y"].dtype == torch.int64
    tensors = TensorDataset(torch.zeros(10, 2), torch.ones(10))
    batch = next(ArrayData.from_arrays(tensors, val_fraction=0.0).split("train").batches(10))
    assert set(batch) == {"x", "y"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"x": np.zeros(5), "y": np.zeros(6)}, "differ in length"),
        ("not data", "must be a mapping of arrays"),
        ({"x": np.zeros(0)}, "no rows"),
    ],
)
def test_bad_sources_are_one_line_data_errors(source, message):
    with pytest.raises(DataError, match=message):
        ArrayData.from_arrays(source)
