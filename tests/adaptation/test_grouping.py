"""Latency-aware grouping on synthetic RTT matrices."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from agent.adaptation.grouping import GLOBAL_GROUP_BITS, is_cross_cluster_round, plan_groups


def _regions_matrix(
    sizes: list[int], seed: int, missing: float = 0.0
) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """A noisy, asymmetric RTT matrix of peers in regions.

    Inside a region each pair has its own RTT of 5-40 ms; between regions the base RTT of the two
    regions (80-300 ms) plus a per-pair spread of +-20%. Each direction gets its own +-15% noise, and
    a ``missing`` share of the entries is NaN.
    """
    rng = np.random.default_rng(seed)
    region = np.repeat(np.arange(len(sizes)), sizes)
    count = len(region)
    between = rng.uniform(80, 300, size=(len(sizes), len(sizes)))
    between = (between + between.T) / 2
    pair = np.where(
        region[:, None] == region[None, :],
        rng.uniform(5, 40, size=(count, count)),
        between[region[:, None], region[None, :]] * rng.uniform(0.8, 1.2, size=(count, count)),
    )
    pair = np.triu(pair, 1) + np.triu(pair, 1).T
    rtt = pair * rng.uniform(0.85, 1.15, size=(count, count))
    rtt[rng.random((count, count)) < missing] = np.nan
    np.fill_diagonal(rtt, 0.0)
    # Peer ids deliberately not in region order, so the clustering cannot lean on the input order.
    peers = [f"peer-{rng.integers(1 << 40):011x}-{index}" for index in range(count)]
    return peers, rtt, {peer: int(region[index]) for index, peer in enumerate(peers)}


def _share_grouped_within_region(plan, region: dict[str, int]) -> float:
    pure = 0
    for cluster in plan.clusters:
        regions = {region[peer] for peer in cluster.members}
        if len(regions) == 1:
            pure += len(cluster.members)
    return pure / len(region)


def test_thousand_agents_in_five_regions_are_grouped_by_region_in_under_a_second() -> None:
    peers, rtt, region = _regions_matrix([300, 250, 200, 150, 100], seed=1, missing=0.02)
    # CPU seconds, not wall seconds: other test runs share this machine's two cores.
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    plan = plan_groups(peers, rtt, target_group_size=16, min_group_size=4)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    share = _share_grouped_within_region(plan, region)
    print(
        f"1,000 agents, 5 regions: {len(plan.clusters)} clusters, {share:.1%} in-region, "
        f"{cpu:.3f} s CPU, {wall:.3f} s wall"
    )
    assert share >= 0.95
    assert cpu < 1.0
    assert len(plan.clusters) == 5
    assert {cluster.group_bits for cluster in plan.clusters} == {"000", "001", "010", "011", "100"}


def test_every_agent_computes_the_same_plan_whatever_order_it_lists_peers_in() -> None:
    peers, rtt, _ = _regions_matrix([12, 9, 7], seed=5, missing=0.05)
    nested = {
        src: {dst: float(rtt[i, j]) for j, dst in enumerate(peers) if not np.isnan(rtt[i, j])}
        for i, src in enumerate(peers)
    }
    shuffled = list(reversed(peers))
    plans = [
        plan_groups(peers, rtt, target_group_size=4, min_group_size=2),
        plan_groups(shuffled, nested, target_group_size=4, min_group_size=2),
        plan_groups(sorted(peers), nested, target_group_size=4, min_group_size=2),
    ]
    assert len({plan.fingerprint for plan in plans}) == 1
    assert plans[0].assignments == plans[1].assignments


def test_all_agents_equal_make_one_cluster_on_the_global_key() -> None:
    rng = np.random.default_rng(2)
    peers = [f"p{index:02d}" for index in range(20)]
    rtt = rng.uniform(40, 60, size=(20, 20))
    plan = plan_groups(peers, rtt, target_group_size=4, min_group_size=2)
    assert len(plan.clusters) == 1 and plan.cut_rtt_ms is None
    assert all(assignment.group_bits == GLOBAL_GROUP_BITS for assignment in plan.assignments.values())


def test_one_agent_far_worse_keeps_a_group_and_does_not_split_the_others() -> None:
    peers = [f"p{index:02d}" for index in range(10)]
    rtt = np.full((10, 10), 20.0)
    rtt[7, :] = rtt[:, 7] = 600.0
    np.fill_diagonal(rtt, 0.0)
    plan = plan_groups(peers, rtt, target_group_size=4, min_group_size=2)
    assert len(plan.clusters) == 1
    assert plan.cluster_of("p07") == plan.cluster_of("p00")


def test_a_far_pair_becomes_its_own_cluster_when_big_enough() -> None:
    peers = [f"p{index:02d}" for index in range(10)]
    rtt = np.full((10, 10), 20.0)
    rtt[8:, :8] = rtt[:8, 8:] = 400.0
    np.fill_diagonal(rtt, 0.0)
    two = plan_groups(peers, rtt, target_group_size=4, min_group_size=2)
    assert [len(cluster.members) for cluster in two.clusters] == [8, 2]
    three = plan_groups(peers, rtt, target_group_size=4, min_group_size=3)
    assert len(three.clusters) == 1  # a pair could never make a group of 3 on its own


def test_a_tiny_region_joins_its_nearest_region_with_a_reason() -> None:
    peers, rtt, region = _regions_matrix([10, 10, 1], seed=4)
    lone = next(peer for peer, index in region.items() if index == 2)
    lone_row = peers.index(lone)
    nearer = 0 if np.nanmean(rtt[lone_row, :10]) < np.nanmean(rtt[lone_row, 10:20]) else 1
    plan = plan_groups(peers, rtt, target_group_size=4, min_group_size=2)
    assert len(plan.clusters) == 2
    mates = plan.clusters[plan.cluster_of(lone)].members
    assert Counter(region[peer] for peer in mates if peer != lone) == {nearer: 10}
    assert "min_group_size" in plan.assignments[lone].fallback


def test_missing_measurements_are_estimated_and_unmeasured_peers_join_the_largest_cluster() -> None:
    peers, rtt, region = _regions_matrix([8, 5], seed=6, missing=0.3)
    rtt[0, :] = np.nan
    rtt[:, 0] = np.nan
    rtt[0, 0] = 0.0
    plan = plan_groups([*peers, "newcomer"], np.pad(rtt, ((0, 1), (0, 1)), constant_values=np.nan), 4, 2)
    measured = [peer for peer in peers if peer != peers[0]]
    assert _share_grouped_within_region(
        plan_groups(measured, rtt[1:, 1:], 4, 2), {peer: region[peer] for peer in measured}
    ) == pytest.approx(1.0)
    largest = max(plan.clusters, key=lambda cluster: len(cluster.members))
    for peer in (peers[0], "newcomer"):
        assert plan.cluster_of(peer) == largest.label
        assert "no RTT measurements" in plan.assignments[peer].fallback


def test_no_measurements_at_all_and_no_peers() -> None:
    plan = plan_groups(["b", "a"], {}, target_group_size=4, min_group_size=2)
    assert [cluster.members for cluster in plan.clusters] == [("a", "b")]
    assert plan_groups([], {}, target_group_size=4, min_group_size=2).clusters == ()


def test_bad_input_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="negative"):
        plan_groups(["a", "b"], {"a": {"b": -3.0}}, 4, 2)
    with pytest.raises(ValueError, match="2x2"):
        plan_groups(["a", "b"], np.zeros((3, 3)), 4, 2)
    with pytest.raises(ValueError, match="min_group_size"):
        plan_groups(["a", "b"], {}, 2, 4)


def test_cross_cluster_schedule_and_group_bits() -> None:
    assert [is_cross_cluster_round(index, 4) for index in range(8)] == [False, False, False, True] * 2
    assert all(is_cross_cluster_round(index, 1) for index in range(3))
    with pytest.raises(ValueError, match="period"):
        is_cross_cluster_round(3, 0)
    peers = [f"p{index:02d}" for index in range(6)]
    rtt = np.full((6, 6), 200.0)
    rtt[:3, :3] = rtt[3:, 3:] = 10.0
    plan = plan_groups(peers, rtt, target_group_size=3, min_group_size=2)
    assert plan.group_bits("p00", 0, 4) == "0" and plan.group_bits("p05", 0, 4) == "1"
    assert plan.group_bits("p00", 3, 4) == plan.group_bits("p05", 3, 4) == GLOBAL_GROUP_BITS
    assert plan.group_bits("stranger", 0, 4) == GLOBAL_GROUP_BITS
