"""Bounded rolling statistics: memory stays constant however long a run lasts."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RollingSummary:
    """mean, std, min and max over the last ``count`` values (NaN when empty)."""

    count: int
    mean: float
    std: float
    min: float
    max: float


class RollingWindow:
    """The last ``size`` float observations of one quantity.

    Args:
        size: how many recent values to keep (default 100 rounds).
    """

    def __init__(self, size: int = 100) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> list[float]:
        return list(self._values)

    def last(self) -> float | None:
        return self._values[-1] if self._values else None

    def summary(self) -> RollingSummary:
        n = len(self._values)
        if n == 0:
            return RollingSummary(0, math.nan, math.nan, math.nan, math.nan)
        mean = sum(self._values) / n
        var = sum((v - mean) ** 2 for v in self._values) / n
        return RollingSummary(n, mean, math.sqrt(var), min(self._values), max(self._values))

    def percentile(self, q: float) -> float:
        """The ``q``-quantile (0..1) of the window by nearest rank; NaN when empty."""
        if not self._values:
            return math.nan
        ordered = sorted(self._values)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[index]


class RoundStats:
    """Per-round metrics of one agent, each over the last ``size`` rounds."""

    FIELDS = ("wait_s", "group_size", "bytes", "grad_norm", "update_norm", "round_s")

    def __init__(self, size: int = 100) -> None:
        self.windows = {name: RollingWindow(size) for name in self.FIELDS}
        self.failed_rounds = 0
        self.ok_rounds = 0

    def add(self, **values: float) -> None:
        for name, value in values.items():
            self.windows[name].add(value)

    def as_dict(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, window in self.windows.items():
            s = window.summary()
            out[name] = {"count": s.count, "mean": s.mean, "std": s.std, "min": s.min, "max": s.max}
        return out
