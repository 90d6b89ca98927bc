"""Adaptive timeouts from observed durations."""

from __future__ import annotations

import random

import pytest

from agent.adaptation.timeouts import AdaptiveTimeout, TimeoutPolicy


def _policy(**changes: float) -> TimeoutPolicy:
    values = {"initial_s": 30.0, "min_s": 1.0, "max_s": 120.0, **changes}
    return TimeoutPolicy(**values)


def test_initial_value_until_enough_samples() -> None:
    timeout = AdaptiveTimeout(_policy())
    for _ in range(4):
        timeout.observe(2.0)
    assert timeout.seconds == 30.0
    timeout.observe(2.0)
    assert timeout.seconds == pytest.approx(3.0)  # 2 s * 1.5 margin


def test_follows_a_high_percentile_of_recent_durations() -> None:
    rng = random.Random(1)
    timeout = AdaptiveTimeout(_policy(margin=1.0, margin_s=0.0))
    durations = [rng.uniform(4.0, 6.0) for _ in range(200)]
    for duration in durations:
        timeout.observe(duration)
    recent = sorted(durations[-50:])
    late = sum(duration > timeout.seconds for duration in recent)
    assert 1 <= late <= 4  # p95 of 50: a few of the recent ones would have timed out
    assert 5.5 < timeout.seconds < 6.0


def test_short_operations_get_an_absolute_margin_and_the_clamp_holds() -> None:
    timeout = AdaptiveTimeout(_policy())
    for _ in range(10):
        timeout.observe(0.1)
    assert timeout.seconds == 1.0  # 0.1 + 0.5 s margin is below min_s
    slow = AdaptiveTimeout(_policy())
    for _ in range(10):
        slow.observe(500.0)
    assert slow.seconds == 120.0


def test_timeouts_in_a_row_back_off_and_a_success_resets() -> None:
    timeout = AdaptiveTimeout(_policy())
    for _ in range(10):
        timeout.observe(4.0)
    assert timeout.seconds == pytest.approx(6.0)
    timeout.observe_timeout()
    timeout.observe_timeout()
    assert timeout.seconds == pytest.approx(6.0 * 1.5**2)
    for _ in range(20):
        timeout.observe_timeout()
    assert timeout.seconds == 120.0  # a dead peer never hangs a round for longer than max_s
    timeout.observe(4.0)
    assert timeout.seconds == pytest.approx(6.0)
    assert "p95" in timeout.describe()


def test_old_durations_leave_the_window() -> None:
    timeout = AdaptiveTimeout(_policy(window=10, min_samples=5))
    for _ in range(10):
        timeout.observe(50.0)
    for _ in range(10):
        timeout.observe(2.0)
    assert timeout.seconds == pytest.approx(3.0)


def test_bad_policy_and_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="min_s <= initial_s"):
        _policy(initial_s=500.0)
    with pytest.raises(ValueError, match="percentile"):
        _policy(percentile=0.0)
    with pytest.raises(ValueError, match="duration"):
        AdaptiveTimeout(_policy()).observe(-1.0)
