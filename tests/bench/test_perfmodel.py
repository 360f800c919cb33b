"""The performance model: limits that must hold whatever the numbers."""

import pytest

from scaletrain.bench.perfmodel import (
    Network,
    Workload,
    allreduce_seconds,
    allreduce_throughput,
    paramserver_throughput,
    saturation_workers,
    scaling_table,
)

WORK = Workload.from_rate(1504.0, 2048)  # an H100 rate of an earlier round: compute dominates
NET = Network(alpha_s=10e-6, bandwidth_bps=25e9)


def test_allreduce_cost_follows_the_ring_formula():
    assert allreduce_seconds(1e9, 1, NET) == 0.0
    # large p: bandwidth term tends to 2 n / B
    assert allreduce_seconds(1e9, 1024, NET) == pytest.approx(
        2 * 1023 * 1e-5 + 2e9 / 25e9 * 1023 / 1024
    )


def test_allreduce_scales_almost_linearly_when_compute_dominates():
    one = allreduce_throughput(1, WORK, NET)
    assert one == pytest.approx(WORK.batch_size / WORK.step_seconds)
    assert allreduce_throughput(1024, WORK, NET) / (1024 * one) > 0.95
    # perfect overlap hides communication entirely
    assert allreduce_throughput(1024, WORK, NET, overlap=1.0) == pytest.approx(1024 * one)


def test_slow_network_costs_efficiency():
    slow = Network(alpha_s=1e-3, bandwidth_bps=1e8)
    assert allreduce_throughput(256, WORK, slow) < allreduce_throughput(256, WORK, NET)


def test_parameter_server_saturates_at_the_master_rate():
    small = Workload.from_rate(1504.0, 128)
    p_star = saturation_workers(small, NET)
    below = paramserver_throughput(int(p_star / 2), small, NET)
    at_cap = paramserver_throughput(int(p_star * 4), small, NET)
    more = paramserver_throughput(int(p_star * 16), small, NET)
    assert below < at_cap
    assert more == pytest.approx(at_cap)  # more workers add nothing past p*
    # sub-masters multiply the capacity
    assert paramserver_throughput(int(p_star * 16), small, NET, masters=4) == pytest.approx(
        4 * at_cap
    )


def test_scaling_table_rows():
    rows = scaling_table([1, 128, 1024], Workload.from_rate(1504.0, 128), NET)
    assert [r["gpus"] for r in rows] == [1, 128, 1024]
    assert rows[0]["allreduce_speedup"] == pytest.approx(1.0)
    assert rows[-1]["paramserver_efficiency"] < rows[-1]["allreduce_efficiency"]
