from collections import Counter

import pytest

from scaletrain.errors import LayoutError
from scaletrain.parallel.layout import NO_COLOR, Layout


def test_plain_data_parallel_is_one_allreduce_group_without_coordinator():
    layout = Layout.for_world(4)
    assert (layout.masters, layout.workers, layout.gpus, layout.size) == (0, 1, 4, 4)
    assert {r.role for r in layout.roles()} == {"worker"}
    assert [layout.role(r).gpu for r in range(4)] == [0, 1, 2, 3]
    assert {layout.replica_color(r) for r in range(4)} == {0}
    assert layout.replica_ranks(2) == [0, 1, 2, 3]
    assert layout.server_of(1) == -1


def test_one_master_two_workers_is_three_processes():
    layout = Layout.for_world(3, masters=1)
    assert [r.role for r in layout.roles()] == ["master", "worker", "worker"]
    assert layout.clients_of(0) == [1, 2]
    assert layout.server_of(1) == layout.server_of(2) == 0
    assert layout.replica_color(0) == NO_COLOR
    assert layout.replica_color(1) != layout.replica_color(2)


def test_sub_masters_serve_their_own_workers_and_talk_to_the_top_master():
    layout = Layout(masters=2, workers=3)
    assert layout.size == 1 + 2 + 2 * 3
    roles = layout.roles()
    assert [r.role for r in roles[:3]] == ["master", "sub-master", "sub-master"]
    assert layout.clients_of(0) == [1, 2]
    assert layout.clients_of(1) == [3, 4, 5]
    assert layout.clients_of(2) == [6, 7, 8]
    assert all(layout.server_of(w) == 1 for w in (3, 4, 5))
    assert layout.server_of(2) == 0 and layout.server_of(0) == -1


def test_full_nested_layout_counts_every_role():
    layout = Layout(groups=2, folds=3, masters=1, workers=2, gpus=4, coordinator=True)
    assert layout.size == 1 + 2 * 3 * (1 + 2 * 4)
    counts = Counter(r.role for r in layout.roles())
    assert counts == {"coordinator": 1, "master": 6, "worker": 48}
    last = layout.role(layout.size - 1)
    assert (last.group, last.fold, last.master, last.worker, last.gpu) == (1, 2, 0, 1, 3)
    # every fold and every worker replica gets its own colour; the coordinator none
    assert layout.fold_color(0) == NO_COLOR
    assert len({layout.fold_color(r) for r in range(1, layout.size)}) == 6
    replicas = Counter(layout.replica_color(r) for r in range(layout.size) if r)
    assert replicas[NO_COLOR] == 6 and len(replicas) == 1 + 12
    assert all(n == 4 for c, n in replicas.items() if c != NO_COLOR)
    # workers' lead ranks are the master's clients
    master = layout.fold_base(1, 2)
    assert layout.clients_of(master) == [master + 1, master + 5]


def test_lead_rank_of_a_replica_is_its_gpu_zero():
    layout = Layout(masters=1, workers=2, gpus=2)
    assert layout.replica_ranks(4) == [3, 4]
    assert layout.server_of(3) == 0


@pytest.mark.parametrize(
    "counts",
    [
        {"workers": 0},
        {"gpus": 0},
        {"masters": -1},
        {"masters": 0, "workers": 2},
        {"groups": 2},
    ],
)
def test_invalid_counts_are_refused(counts):
    with pytest.raises(LayoutError):
        Layout(**counts)


def test_world_size_mismatch_prints_the_role_table():
    with pytest.raises(LayoutError) as err:
        Layout.for_world(4, masters=2, workers=2)
    text = str(err.value)
    assert "needs 7 processes but the MPI world has 4" in text
    assert "sub-master" in text and "rank  role" in text


def test_uneven_world_for_folds_is_refused():
    with pytest.raises(LayoutError, match="needs"):
        Layout.for_world(8, masters=1, folds=3, groups=1)


def test_rank_outside_the_layout_is_refused():
    with pytest.raises(LayoutError, match="outside"):
        Layout().role(1)


def test_table_elides_long_layouts_but_keeps_the_last_rank():
    layout = Layout(gpus=100)
    lines = layout.table(max_rows=10).splitlines()
    assert len(lines) == 2 + 10 + 1
    assert lines[-1].split()[0] == "99"
    assert "100 processes" in lines[0]
