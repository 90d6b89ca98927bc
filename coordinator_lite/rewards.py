"""Splitting an epoch's reward pool among peers, exactly to the wei.

All arithmetic is on Python integers: scores become integer weights (millionths), every share is rounded
down, and whatever rounding leaves over is carried into the next epoch. For every strategy
``sum(rewards) + carried_out == pool + carried_in``, and no reward is negative, so the total paid never
exceeds what was available.

Strategies:

- ``proportional``: share ~ score.
- ``tiered``: the top ``top_fraction`` of peers by score (at least one) have their weight raised by
  ``bonus_percent``; then proportional.
- ``minimum_guarantee``: ``guarantee_bps`` basis points of the pool are split equally among all peers
  with a positive score; the rest proportionally to score.
- ``performance``: share ~ samples processed x quality x reliability: useful work, not time spent, so
  fast hardware earns more per second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from coordinator_lite.scoring import ScoreCard

WEIGHT_SCALE = 1_000_000
"""Scores are turned into integer weights in millionths."""


class Strategy(StrEnum):
    PROPORTIONAL = "proportional"
    TIERED = "tiered"
    MINIMUM_GUARANTEE = "minimum_guarantee"
    PERFORMANCE = "performance"


@dataclass(frozen=True)
class StrategyOptions:
    """Knobs of the strategies. ``top_fraction`` in (0, 1]; ``bonus_percent`` >= 0; ``guarantee_bps``
    in [0, 10000] (basis points of the pool)."""

    top_fraction: float = 0.1
    bonus_percent: int = 50
    guarantee_bps: int = 2000

    def __post_init__(self) -> None:
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.bonus_percent < 0:
            raise ValueError(f"bonus_percent must be >= 0, got {self.bonus_percent}")
        if not 0 <= self.guarantee_bps <= 10_000:
            raise ValueError(f"guarantee_bps must be within 0..10000, got {self.guarantee_bps}")


@dataclass(frozen=True)
class RewardSplit:
    """The outcome: wei per peer id (only peers with a positive reward), and the wei carried forward."""

    rewards: dict[str, int] = field(default_factory=dict)
    carried_out: int = 0
    distributable: int = 0

    @property
    def total(self) -> int:
        return sum(self.rewards.values())


def _weight(value: float) -> int:
    if not math.isfinite(value) or value < 0:  # a bug upstream must not mint or burn rewards
        raise ValueError(f"a score must be a finite number >= 0, got {value}")
    return int(value * WEIGHT_SCALE)


def _proportional(amount: int, weights: dict[str, int]) -> dict[str, int]:
    total = sum(weights.values())
    if amount <= 0 or total <= 0:
        return {}
    return {peer: amount * weight // total for peer, weight in weights.items() if weight > 0}


def split_rewards(
    cards: Sequence[ScoreCard],
    pool_wei: int,
    strategy: Strategy,
    *,
    carried_in_wei: int = 0,
    options: StrategyOptions | None = None,
) -> RewardSplit:
    """Split ``pool_wei + carried_in_wei`` among ``cards`` by ``strategy``; integers only, rounding down."""
    if pool_wei < 0 or carried_in_wei < 0:
        raise ValueError("pool_wei and carried_in_wei must be >= 0")
    options = options or StrategyOptions()
    available = pool_wei + carried_in_wei
    if strategy is Strategy.PERFORMANCE:
        weights = {card.peer_id: _weight(card.samples * card.quality * card.reliability) for card in cards}
    else:
        weights = {card.peer_id: _weight(card.score) for card in cards}
    weights = {peer: weight for peer, weight in weights.items() if weight > 0}

    if strategy is Strategy.TIERED and weights:
        ranked = sorted(weights, key=lambda peer: (-weights[peer], peer))
        top = max(1, int(len(ranked) * options.top_fraction))
        bonus = set(ranked[:top])
        weights = {p: w * (100 + (options.bonus_percent if p in bonus else 0)) for p, w in weights.items()}

    rewards: dict[str, int] = {}
    remaining = available
    if strategy is Strategy.MINIMUM_GUARANTEE and weights:
        each = available * options.guarantee_bps // 10_000 // len(weights)
        rewards = dict.fromkeys(weights, each)
        remaining -= each * len(weights)
    for peer, amount in _proportional(remaining, weights).items():
        rewards[peer] = rewards.get(peer, 0) + amount
    rewards = {peer: amount for peer, amount in rewards.items() if amount > 0}
    paid = sum(rewards.values())
    assert paid <= available, "reward split exceeded the pool"  # integer floors make this impossible
    return RewardSplit(rewards=rewards, carried_out=available - paid, distributable=available)
