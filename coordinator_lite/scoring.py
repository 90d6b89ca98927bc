"""Per-epoch scores: compute time, times a quality multiplier, times a reliability multiplier.

``score = compute_seconds * quality * reliability`` where

- ``quality`` (0.5-1.5) comes from each counted round: how far the peer's update norm lies from its
  group's median (a factor 10 away costs the full point), and how many other members flagged its update
  as far outside the group's; a round without norms or flags is neutral (1.0), a round whose claims were
  clipped as an outlier is capped at 1.0. The epoch's value is the compute-weighted mean.
- ``reliability`` (0.8-1.2) is the mean of uptime (the share of ``uptime_bucket_s`` time buckets, from
  the peer's first round in the epoch to the epoch's end, in which it had a counted round) and
  communication success (counted rounds / (counted + rounds its group confirmed without its report)).

Pure functions of :mod:`coordinator_lite.verification` output, so they are tested without a swarm.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from coordinator_lite.verification import AcceptedRound, MissedRound

QUALITY_MIN, QUALITY_NEUTRAL, QUALITY_MAX = 0.5, 1.0, 1.5
RELIABILITY_MIN, RELIABILITY_MAX = 0.8, 1.2


@dataclass(frozen=True)
class ScoreCard:
    """One peer's epoch. ``compute_seconds`` and ``samples`` are the counted (possibly clipped) sums."""

    peer_id: str
    wallet: str
    rounds_accepted: int
    rounds_missed: int
    compute_seconds: float
    samples: int
    quality: float
    reliability: float
    uptime: float
    communication_success: float
    outlier_rounds: int
    score: float


def round_quality(accepted: AcceptedRound) -> float:
    """The quality multiplier (0.5-1.5) one counted round earns."""
    others = max(1, accepted.group_size - 1)
    flagged_share = min(1.0, accepted.flagged_by / others)
    deviation: float | None = None
    if accepted.update_norm_micro > 0 and accepted.group_median_norm_micro > 0:
        deviation = min(1.0, abs(math.log10(accepted.update_norm_micro / accepted.group_median_norm_micro)))
    if deviation is None:
        quality = QUALITY_NEUTRAL - flagged_share * (QUALITY_NEUTRAL - QUALITY_MIN)
    else:
        quality = QUALITY_MAX - max(deviation, flagged_share) * (QUALITY_MAX - QUALITY_MIN)
    if accepted.flags:
        quality = min(quality, QUALITY_NEUTRAL)
    return max(QUALITY_MIN, min(QUALITY_MAX, quality))


def reliability(uptime: float, communication_success: float) -> float:
    """The reliability multiplier (0.8-1.2) from two shares in [0, 1]."""
    mean = (min(1.0, max(0.0, uptime)) + min(1.0, max(0.0, communication_success))) / 2
    return RELIABILITY_MIN + mean * (RELIABILITY_MAX - RELIABILITY_MIN)


def score_epoch(
    accepted: Iterable[AcceptedRound],
    missed: Iterable[MissedRound],
    *,
    epoch_end: float,
    uptime_bucket_s: float = 60.0,
) -> list[ScoreCard]:
    """One :class:`ScoreCard` per peer with at least one counted round, sorted by peer id.

    Args:
        accepted: the epoch's counted rounds.
        missed: rounds a peer's group confirmed without a counted report of that peer.
        epoch_end: Unix seconds at which the epoch closed (the end of the uptime span).
        uptime_bucket_s: width of the uptime buckets, seconds.
    """
    rounds: dict[str, list[AcceptedRound]] = defaultdict(list)
    for item in accepted:
        rounds[item.peer_id].append(item)
    misses: dict[str, int] = defaultdict(int)
    for miss in missed:
        misses[miss.peer_id] += 1

    cards = []
    for peer_id in sorted(rounds):
        peer_rounds = rounds[peer_id]
        compute_ms = sum(item.compute_ms for item in peer_rounds)
        weights = [item.compute_ms for item in peer_rounds] if compute_ms else [1] * len(peer_rounds)
        quality = sum(w * round_quality(item) for w, item in zip(weights, peer_rounds, strict=True)) / sum(
            weights
        )
        first = min(item.timestamp for item in peer_rounds)
        buckets_total = max(1, math.ceil((max(epoch_end, first + 1) - first) / uptime_bucket_s))
        buckets_active = len({int((item.timestamp - first) // uptime_bucket_s) for item in peer_rounds})
        uptime = min(1.0, buckets_active / buckets_total)
        communication = len(peer_rounds) / (len(peer_rounds) + misses[peer_id])
        multiplier = reliability(uptime, communication)
        compute_seconds = compute_ms / 1000
        cards.append(
            ScoreCard(
                peer_id=peer_id,
                wallet=peer_rounds[0].wallet,
                rounds_accepted=len(peer_rounds),
                rounds_missed=misses[peer_id],
                compute_seconds=compute_seconds,
                samples=sum(item.samples for item in peer_rounds),
                quality=quality,
                reliability=multiplier,
                uptime=uptime,
                communication_success=communication,
                outlier_rounds=sum(1 for item in peer_rounds if item.flags),
                score=compute_seconds * quality * multiplier,
            )
        )
    return cards
