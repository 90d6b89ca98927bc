"""Latency-aware averaging groups: cluster the swarm by measured RTT and give each cluster a group key.

Pure function of measurements: every agent that reads the same link summaries from the DHT computes
the same :class:`GroupPlan` (peers are put in sorted order first, ties are broken by peer id, and the
clustering is deterministic), so no coordinator has to hand plans out.

How it decides:

1. The RTT matrix (possibly incomplete, asymmetric, noisy) becomes a symmetric distance: the mean of
   both directions where both were measured, the one that was otherwise. A missing pair is estimated
   through the nearest relays (``d(i, k) + d(k, j)`` over the ``relay_candidates`` peers closest to
   ``i``: the triangle inequality makes that an upper bound); a pair that stays unknown counts as far.
2. Average-linkage hierarchical clustering (scipy) of that distance. The dendrogram is cut at the
   lowest merge of two clusters that both have at least ``min_group_size`` peers and whose mutual
   RTT is ``split_ratio`` times their mean internal RTT: that is where "peers of one region" stop and
   "regions joined together" begin. Without such a merge the swarm is one cluster. (The cut is one
   RTT for the whole swarm, so a region much more spread out than the one that set the cut can
   fall apart into several small clusters; they stay latency-coherent.)
3. Clusters smaller than ``min_group_size`` join the nearest cluster (average RTT); peers with no
   measurement at all join the largest cluster. Both carry a ``fallback`` reason.
4. Each cluster gets a fixed-width bit string used as hivemind's group-key suffix
   (``f"{prefix}.0b{bits}"``); cross-cluster rounds use :data:`GLOBAL_GROUP_BITS` so that every
   cluster mixes with the others (hierarchical averaging).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

GLOBAL_GROUP_BITS = ""
"""Group-key suffix every peer uses in a cross-cluster round (hivemind's default, empty suffix)."""

RttInput = np.ndarray | Mapping[str, Mapping[str, float]]
"""Either an n x n array in the order of ``peers`` (``[i, j]``: ms from peer i to peer j, NaN when not
measured) or a nested mapping ``{from_peer: {to_peer: ms}}`` (absent = not measured)."""


@dataclass(frozen=True)
class GroupingConfig:
    """Knobs of the clustering.

    - ``floor_ms``: RTTs below this count as "the same place": a jump from 1 ms to 15 ms is not a split.
    - ``split_ratio``: how much larger the RTT of a merge must be than the merge before it to separate
      clusters there (2 = clusters whose mutual RTT is at least twice their internal RTT).
    - ``relay_candidates``: nearest peers tried as relays when estimating an unmeasured pair.
    """

    floor_ms: float = 20.0
    split_ratio: float = 2.0
    relay_candidates: int = 8

    def __post_init__(self) -> None:
        if self.floor_ms <= 0 or self.split_ratio <= 1 or self.relay_candidates < 1:
            raise ValueError(
                f"GroupingConfig needs floor_ms > 0, split_ratio > 1 and relay_candidates >= 1, got {self}"
            )


@dataclass(frozen=True)
class PeerAssignment:
    """Where one peer averages. ``fallback`` says why, when it was not placed by its own measurements."""

    peer_id: str
    cluster: int
    group_bits: str
    fallback: str | None = None


@dataclass(frozen=True)
class ClusterInfo:
    """One latency cluster: its label, key suffix, members (sorted) and median internal RTT (ms)."""

    label: int
    group_bits: str
    members: tuple[str, ...]
    median_rtt_ms: float | None


@dataclass(frozen=True)
class GroupPlan:
    """Which cluster, and so which hivemind group key, each peer uses.

    ``cut_rtt_ms`` is the RTT at which the dendrogram was cut (None when the swarm is one cluster).
    """

    clusters: tuple[ClusterInfo, ...]
    assignments: Mapping[str, PeerAssignment]
    target_group_size: int
    min_group_size: int
    cut_rtt_ms: float | None = None
    _fingerprint: str = field(default="", repr=False)

    def cluster_of(self, peer_id: str) -> int | None:
        """Cluster label of ``peer_id``; None for a peer the plan does not know (a newcomer)."""
        assignment = self.assignments.get(peer_id)
        return None if assignment is None else assignment.cluster

    def group_bits(self, peer_id: str, round_index: int, cross_cluster_period: int) -> str:
        """Group-key suffix ``peer_id`` uses in round ``round_index``.

        The cluster's bits in ordinary rounds; :data:`GLOBAL_GROUP_BITS` in cross-cluster rounds (see
        :func:`is_cross_cluster_round`) and for peers the plan does not know yet.
        """
        assignment = self.assignments.get(peer_id)
        if assignment is None or is_cross_cluster_round(round_index, cross_cluster_period):
            return GLOBAL_GROUP_BITS
        return assignment.group_bits

    @property
    def fingerprint(self) -> str:
        """Short hash of the assignment: agents can log it to check they computed the same plan."""
        return self._fingerprint


def is_cross_cluster_round(round_index: int, period: int) -> bool:
    """Whether round ``round_index`` (0-based) mixes clusters: the last round of every ``period``.

    ``period=1`` makes every round global (plain hivemind); ``period=4`` gives three in-cluster rounds,
    then one global round.
    """
    if period < 1:
        raise ValueError(f"cross-cluster period must be at least 1 round, got {period}")
    if round_index < 0:
        raise ValueError(f"round index must be >= 0, got {round_index}")
    return round_index % period == period - 1


def plan_groups(
    peers: Sequence[str],
    rtt_ms: RttInput,
    target_group_size: int,
    min_group_size: int,
    config: GroupingConfig | None = None,
) -> GroupPlan:
    """Cluster ``peers`` by RTT into latency groups (see the module docstring for the method).

    ``target_group_size`` and ``min_group_size`` are hivemind's: a cluster smaller than
    ``min_group_size`` could never form a group on its own, so it joins its nearest cluster. Clusters
    larger than ``target_group_size`` are not split: hivemind's matchmaking forms groups of that size
    among the peers sharing a key; the plan records it for the averager's settings.
    """
    config = config or GroupingConfig()
    if min_group_size < 1 or target_group_size < min_group_size:
        raise ValueError(
            "need 1 <= min_group_size <= target_group_size, "
            f"got min {min_group_size}, target {target_group_size}"
        )
    if len(set(peers)) != len(peers):
        raise ValueError("peers must be distinct peer ids")
    order = sorted(peers)
    if not order:
        return _build_plan([], None, [], {}, target_group_size, min_group_size, None)
    distance = _symmetric_distance(_as_matrix(peers, order, rtt_ms))
    off_diagonal = ~np.eye(len(order), dtype=bool)
    measured = np.flatnonzero((np.isfinite(distance) & off_diagonal).any(axis=1))
    measured_set = set(measured.tolist())
    unmeasured = [peer for index, peer in enumerate(order) if index not in measured_set]

    fallbacks: dict[str, str] = {}
    groups: list[list[str]] = []
    cut: float | None = None
    if len(measured) > 0:
        sub = _fill_missing(distance[np.ix_(measured, measured)], config.relay_candidates)
        labels, cut = _cluster(sub, min_group_size, config)
        labels, merged = _merge_small_clusters(sub, labels, min_group_size)
        for position, reason in merged.items():
            fallbacks[order[measured[position]]] = reason
        by_label: dict[int, list[str]] = {}
        for position, label in enumerate(labels.tolist()):
            by_label.setdefault(label, []).append(order[measured[position]])
        groups = list(by_label.values())
    if unmeasured:
        if groups:
            largest = min(groups, key=lambda group: (-len(group), min(group)))
            largest.extend(unmeasured)
            reason = "no RTT measurements yet: joined the largest cluster"
        else:
            groups = [list(unmeasured)]
            reason = "no RTT measurements in the swarm yet: one global cluster"
        fallbacks.update(dict.fromkeys(unmeasured, reason))
    return _build_plan(order, distance, groups, fallbacks, target_group_size, min_group_size, cut)


def _as_matrix(peers: Sequence[str], order: list[str], rtt_ms: RttInput) -> np.ndarray:
    """The RTT input as an array in ``order``, NaN where not measured; refuses negative values."""
    size = len(order)
    if isinstance(rtt_ms, np.ndarray):
        if rtt_ms.shape != (len(peers), len(peers)):
            raise ValueError(
                f"rtt_ms array must be {len(peers)}x{len(peers)} (one row per peer), got {rtt_ms.shape}"
            )
        given = {peer: i for i, peer in enumerate(peers)}
        index = np.asarray([given[peer] for peer in order], dtype=int)
        matrix = np.array(rtt_ms, dtype=float)[np.ix_(index, index)]
    else:
        position = {peer: i for i, peer in enumerate(order)}
        matrix = np.full((size, size), np.nan)
        for source, row in rtt_ms.items():
            i = position.get(source)
            if i is None:
                continue
            for target, value in row.items():
                j = position.get(target)
                if j is not None and value is not None:
                    matrix[i, j] = float(value)
    matrix[~np.isfinite(matrix)] = np.nan
    if np.any(matrix[np.isfinite(matrix)] < 0):
        raise ValueError(
            "rtt_ms has negative round-trip times; give milliseconds >= 0, NaN when not measured"
        )
    return matrix


def _symmetric_distance(matrix: np.ndarray) -> np.ndarray:
    """Mean of both directions where both exist, the one that exists otherwise, NaN if neither."""
    forward, backward = matrix, matrix.T
    distance = np.where(
        np.isnan(forward), backward, np.where(np.isnan(backward), forward, (forward + backward) / 2)
    )
    np.fill_diagonal(distance, 0.0)
    return distance


def _fill_missing(distance: np.ndarray, relay_candidates: int) -> np.ndarray:
    """Estimate missing pairs through each peer's nearest relays; what stays unknown counts as far."""
    filled = distance.copy()
    missing_rows = np.flatnonzero(np.isnan(distance).any(axis=1))
    for row in missing_rows:
        known = np.flatnonzero(np.isfinite(distance[row]))
        known = known[known != row]
        if len(known) == 0:
            continue
        # A stable sort, so that ties pick the same relays on every agent whatever its numpy version.
        relays = known[np.argsort(distance[row, known], kind="stable")[:relay_candidates]]
        targets = np.flatnonzero(np.isnan(distance[row]))
        via = distance[row, relays][:, None] + distance[np.ix_(relays, targets)]
        with np.errstate(all="ignore"):
            estimate = np.nanmin(np.where(np.isnan(via), np.inf, via), axis=0)
        filled[row, targets] = np.where(np.isfinite(estimate), estimate, np.nan)
    # Both directions may have been estimated through different relays: keep the tighter bound.
    filled = np.fmin(filled, filled.T)
    if np.isnan(filled).any():
        far = float(np.nanmax(filled)) if np.isfinite(filled).any() else 0.0
        filled[np.isnan(filled)] = far
    np.fill_diagonal(filled, 0.0)
    return filled


def _cluster(
    distance: np.ndarray, min_group_size: int, config: GroupingConfig
) -> tuple[np.ndarray, float | None]:
    """Average-linkage labels (0-based) and the cut RTT, or one cluster when there is no clear split.

    Merges are visited from the lowest RTT up; the first one that joins two clusters of at least
    ``min_group_size`` peers at an RTT ``split_ratio`` times above the mean internal RTT of both sets
    the cut just below it. Small appendages (one far peer) never set the cut; they fall out of it and
    are folded back by :func:`_merge_small_clusters`.
    """
    size = len(distance)
    if size < 2:
        return np.zeros(size, dtype=int), None
    tree = linkage(squareform(distance, checks=False), method="average")
    # Cluster ids: 0..size-1 are peers, size + k is the cluster made by linkage row k. For each, the
    # sum of its internal pair RTTs: an average-linkage height times |L|*|R| is the sum across L and R.
    counts = np.concatenate([np.ones(size), tree[:, 3]])
    internal_sum = np.zeros(2 * size - 1)
    for step, (left, right, height, _) in enumerate(tree):
        left, right = int(left), int(right)
        internal_sum[size + step] = (
            internal_sum[left] + internal_sum[right] + height * counts[left] * counts[right]
        )
        if min(counts[left], counts[right]) < min_group_size:
            continue
        internal_mean = max(
            internal_sum[child] / (counts[child] * (counts[child] - 1) / 2) if counts[child] > 1 else 0.0
            for child in (left, right)
        )
        if height >= config.split_ratio * max(internal_mean, config.floor_ms):
            cut = float((tree[step - 1, 2] + height) / 2) if step else float(height / 2)
            labels = fcluster(tree, t=cut, criterion="distance") - 1
            return labels.astype(int), cut
    return np.zeros(size, dtype=int), None


def _merge_small_clusters(
    distance: np.ndarray, labels: np.ndarray, min_group_size: int
) -> tuple[np.ndarray, dict[int, str]]:
    """Fold clusters smaller than ``min_group_size`` into their nearest cluster by average RTT.

    Smallest cluster first (ties: lowest label), one at a time, until every cluster is big enough or
    one is left. Returns the new labels and, per merged position, the reason.
    """
    labels = labels.copy()
    reasons: dict[int, str] = {}
    while True:
        present, counts = np.unique(labels, return_counts=True)
        if len(present) < 2 or counts.min() >= min_group_size:
            return labels, reasons
        small = int(present[np.argmin(counts)])
        small_members = np.flatnonzero(labels == small)
        best_label, best_rtt = None, math.inf
        for other in present.tolist():
            if other == small:
                continue
            mean_rtt = float(distance[np.ix_(small_members, np.flatnonzero(labels == other))].mean())
            if mean_rtt < best_rtt:
                best_label, best_rtt = other, mean_rtt
        labels[small_members] = best_label
        for position in small_members.tolist():
            reasons[position] = (
                f"its cluster of {len(small_members)} was below min_group_size {min_group_size}: "
                f"joined the nearest cluster ({best_rtt:.0f} ms average RTT)"
            )


def _build_plan(
    order: list[str],
    distance: np.ndarray | None,
    groups: list[list[str]],
    fallbacks: Mapping[str, str],
    target_group_size: int,
    min_group_size: int,
    cut: float | None,
) -> GroupPlan:
    """Label clusters by their smallest peer id, give them key bits, and freeze the plan."""
    groups = sorted((sorted(group) for group in groups), key=lambda group: group[0])
    width = math.ceil(math.log2(len(groups))) if len(groups) > 1 else 0
    position = {peer: i for i, peer in enumerate(order)}
    clusters: list[ClusterInfo] = []
    assignments: dict[str, PeerAssignment] = {}
    for label, members in enumerate(groups):
        bits = format(label, f"0{width}b") if width else GLOBAL_GROUP_BITS
        clusters.append(
            ClusterInfo(label, bits, tuple(members), _median_internal_rtt(distance, position, members))
        )
        for peer in members:
            assignments[peer] = PeerAssignment(peer, label, bits, fallbacks.get(peer))
    digest = hashlib.sha256("\n".join(f"{peer} {assignments[peer].cluster}" for peer in order).encode())
    return GroupPlan(
        clusters=tuple(clusters),
        assignments=MappingProxyType(assignments),
        target_group_size=target_group_size,
        min_group_size=min_group_size,
        cut_rtt_ms=cut,
        _fingerprint=digest.hexdigest()[:16],
    )


def _median_internal_rtt(
    distance: np.ndarray | None, position: Mapping[str, int], members: list[str]
) -> float | None:
    """Median measured RTT between members of one cluster (ms), None with fewer than two measured."""
    if distance is None or len(members) < 2:
        return None
    index = np.asarray([position[peer] for peer in members])
    block = distance[np.ix_(index, index)]
    values = block[np.triu_indices(len(index), k=1)]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None
