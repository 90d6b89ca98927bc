"""What one link does to one chunk of a TCP stream: its one-way delay and whether a loss hits it.

Pure functions of a profile, the link's current RTT and a random generator, so the statistics are
tested without sockets. See :mod:`agent.network.profiles` for the meaning of each field.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from agent.network.profiles import LinkProfile

BLACK_HOLE_LOSSES = 8
"""This many losses of the same segment in a row (always, at loss = 1) and the direction goes silent."""


@dataclass(frozen=True)
class LossOutcome:
    """What loss does to a chunk.

    Attributes:
        stall_s: extra delay, seconds: one RTO per loss, doubling per retransmission lost again.
        reset: the connection is reset instead (``unstable``'s ``reset_fraction``).
        black_hole: the direction delivers nothing more (``BLACK_HOLE_LOSSES`` losses in a row).
    """

    stall_s: float = 0.0
    reset: bool = False
    black_hole: bool = False


NO_LOSS = LossOutcome()


def one_way_delay_s(profile: LinkProfile, rtt_ms: float, rng: random.Random) -> float:
    """Half of ``rtt_ms`` plus this chunk's share of jitter (uniform ± ``jitter_ms`` / 4), seconds, >= 0.

    Two directions of ± jitter/4 make a round trip of ± jitter/2 around ``rtt_ms``.
    """
    delay_ms = rtt_ms / 2.0
    if profile.jitter_ms:
        delay_ms += rng.uniform(-profile.jitter_ms / 4.0, profile.jitter_ms / 4.0)
    return max(0.0, delay_ms) / 1000.0


def chunk_loss_probability(profile: LinkProfile, size_bytes: int) -> float:
    """Probability that at least one of the chunk's segments is lost."""
    if profile.loss <= 0.0 or size_bytes <= 0:
        return 0.0
    segments = math.ceil(size_bytes / profile.segment_bytes)
    return 1.0 - (1.0 - profile.loss) ** segments


def sample_loss(profile: LinkProfile, size_bytes: int, rng: random.Random) -> LossOutcome:
    """Draw what loss does to a chunk of ``size_bytes`` sent at once.

    The chunk's segments leave together, so several of them lost cost one stall, as TCP with SACK
    recovers a window's losses together. A lost segment's retransmission is lost again with the same
    probability, and each repeat doubles the wait (TCP's exponential back-off).
    """
    if rng.random() >= chunk_loss_probability(profile, size_bytes):
        return NO_LOSS
    if profile.reset_fraction and rng.random() < profile.reset_fraction:
        return LossOutcome(reset=True)
    losses = 1
    while losses < BLACK_HOLE_LOSSES and rng.random() < profile.loss:
        losses += 1
    if losses >= BLACK_HOLE_LOSSES:
        return LossOutcome(black_hole=True)
    return LossOutcome(stall_s=profile.rto_ms / 1000.0 * (2**losses - 1))
