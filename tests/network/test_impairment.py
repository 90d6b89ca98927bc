"""Per-chunk statistics: the token bucket's schedule, one-way delay with jitter, loss stalls and resets."""

from __future__ import annotations

import random

import pytest

from agent.network.check import binomial_bounds
from agent.network.impairment import chunk_loss_probability, one_way_delay_s, sample_loss
from agent.network.profiles import LinkProfile
from agent.network.token_bucket import TokenBucket


def test_token_bucket_paces_at_the_rate_after_the_burst() -> None:
    bucket = TokenBucket(rate_bytes_per_s=1000, burst_bytes=100)
    assert bucket.reserve(100, now_s=0.0) == 0.0  # within the burst: crosses at once
    assert bucket.reserve(100, now_s=0.0) == pytest.approx(0.1)
    done = [bucket.reserve(500, now_s=0.0) for _ in range(4)]
    assert done[-1] == pytest.approx((200 + 2000 - 100) / 1000)
    assert bucket.reserve(10, now_s=100.0) == 100.0  # idle: the schedule catches up with the clock
    with pytest.raises(ValueError):
        TokenBucket(0, 10)


def test_one_way_delay_is_half_the_rtt_with_bounded_jitter() -> None:
    rng = random.Random(1)
    assert one_way_delay_s(LinkProfile(rtt_ms=80), 80, rng) == pytest.approx(0.040)
    jittery = LinkProfile(rtt_ms=80, jitter_ms=20)
    delays = [one_way_delay_s(jittery, 80, rng) for _ in range(2000)]
    assert min(delays) >= 0.035 and max(delays) <= 0.045
    assert sum(delays) / len(delays) == pytest.approx(0.040, abs=0.0005)
    assert one_way_delay_s(LinkProfile(rtt_ms=2, jitter_ms=40), 2, rng) >= 0.0


def test_loss_rate_per_segment_and_stall_length() -> None:
    profile = LinkProfile(rtt_ms=100, loss=0.05)
    rng = random.Random(2)
    outcomes = [sample_loss(profile, 500, rng) for _ in range(20_000)]
    lost = [o for o in outcomes if o.stall_s]
    low, high = binomial_bounds(20_000, 0.05)
    assert low <= len(lost) <= high
    assert all(round(o.stall_s, 6) in (0.2, 0.6, 1.4, 3.0) for o in lost)  # RTO 200 ms, doubling per repeat
    assert sum(o.stall_s > 0.2 for o in lost) < len(lost) * 0.1
    assert chunk_loss_probability(profile, 1448 * 10) == pytest.approx(1 - 0.95**10)
    assert chunk_loss_probability(LinkProfile(), 10_000) == 0.0


def test_total_loss_is_a_black_hole_and_resets_follow_their_fraction() -> None:
    rng = random.Random(3)
    assert sample_loss(LinkProfile(loss=1.0), 10, rng).black_hole
    resetting = LinkProfile(loss=0.5, reset_fraction=0.25)
    outcomes = [sample_loss(resetting, 10, rng) for _ in range(8000)]
    resets = sum(o.reset for o in outcomes)
    low, high = binomial_bounds(8000, 0.5 * 0.25)
    assert low <= resets <= high
