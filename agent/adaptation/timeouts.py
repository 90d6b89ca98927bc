"""Timeouts that follow the observed durations instead of constants users must guess.

One :class:`AdaptiveTimeout` per kind of wait (matchmaking, all-reduce, state download). Feed it the
duration of every operation that finished (``observe``) and every one that hit the timeout
(``observe_timeout``); read ``seconds`` before starting the next one.

The timeout is a high percentile of the recent durations times a margin, clamped to [min, max]. A
timed-out operation says only "longer than the timeout", so each timeout in a row multiplies the value
by ``backoff`` (up to ``max_s``) until an operation finishes again: a link that got slower is
followed instead of failing forever.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimeoutPolicy:
    """How a timeout is derived. Seconds throughout.

    - ``initial_s``: used until ``min_samples`` durations are known.
    - ``min_s`` / ``max_s``: the clamp. Keep ``max_s`` finite: a dead peer must not hang a round.
    - ``percentile``: which percentile of the last ``window`` durations to cover (95 = 1 in 20 late).
    - ``margin``: factor on that percentile (1.5 = 50% headroom) ...
    - ``margin_s``: ... but at least this many seconds of headroom (short operations are noisy).
    - ``backoff``: factor per consecutive timeout.
    """

    initial_s: float
    min_s: float
    max_s: float
    percentile: float = 95.0
    margin: float = 1.5
    margin_s: float = 0.5
    window: int = 50
    min_samples: int = 5
    backoff: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.initial_s <= self.max_s or not math.isfinite(self.max_s):
            raise ValueError(
                f"timeouts need 0 < min_s <= initial_s <= max_s < inf, "
                f"got {self.min_s}, {self.initial_s}, {self.max_s}"
            )
        if not 0 < self.percentile <= 100 or self.margin < 1 or self.margin_s < 0 or self.backoff < 1:
            raise ValueError(
                f"need 0 < percentile <= 100, margin >= 1, margin_s >= 0 and backoff >= 1, got {self}"
            )
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ValueError(f"need window >= 1 and 1 <= min_samples <= window, got {self}")


class AdaptiveTimeout:
    """A timeout in seconds, learned from recent durations (see the module docstring)."""

    def __init__(self, policy: TimeoutPolicy) -> None:
        self.policy = policy
        self._durations: deque[float] = deque(maxlen=policy.window)
        self.consecutive_timeouts = 0

    def observe(self, seconds: float) -> None:
        """An operation finished after ``seconds``."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a duration must be a finite number of seconds >= 0, got {seconds}")
        self._durations.append(seconds)
        self.consecutive_timeouts = 0

    def observe_timeout(self) -> None:
        """An operation was abandoned at the current timeout."""
        self.consecutive_timeouts += 1

    @property
    def samples(self) -> int:
        """Durations in the window."""
        return len(self._durations)

    @property
    def seconds(self) -> float:
        """The timeout to use for the next operation."""
        policy = self.policy
        if len(self._durations) < policy.min_samples:
            base = policy.initial_s
        else:
            high = float(np.percentile(np.asarray(self._durations), policy.percentile))
            base = max(high * policy.margin, high + policy.margin_s)
        base *= policy.backoff**self.consecutive_timeouts
        return min(policy.max_s, max(policy.min_s, base))

    def describe(self) -> str:
        """One line for logs, e.g. ``4.2 s (p95 of 50 durations, 0 timeouts in a row)``."""
        if len(self._durations) < self.policy.min_samples:
            source = f"initial value, {len(self._durations)}/{self.policy.min_samples} durations seen"
        else:
            source = f"p{self.policy.percentile:g} of {len(self._durations)} durations"
        return f"{self.seconds:.1f} s ({source}, {self.consecutive_timeouts} timeouts in a row)"
