"""A token bucket, written as a virtual clock, that schedules bytes onto a capped link.

Hand-written because the proxy needs *when* a chunk finishes crossing the link (to put it in the
delay queue), not a blocking ``acquire``; the usual libraries (aiolimiter, pyrate-limiter) only block.
This is the GCRA form of a token bucket: ``theoretical_done`` is when the link would finish every byte
reserved so far if it had sent them back to back at ``rate``; a chunk may finish up to
``burst_bytes / rate`` seconds before that, which is the bucket's depth.
"""

from __future__ import annotations


class TokenBucket:
    """Schedules chunks on a link of ``rate_bytes_per_s`` with a bucket of ``burst_bytes``.

    Args:
        rate_bytes_per_s: sustained rate, bytes per second (> 0).
        burst_bytes: bytes that may pass at once after an idle period (>= 0).
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float) -> None:
        if rate_bytes_per_s <= 0:
            raise ValueError(f"rate_bytes_per_s must be > 0, got {rate_bytes_per_s}")
        if burst_bytes < 0:
            raise ValueError(f"burst_bytes must be >= 0, got {burst_bytes}")
        self.rate = float(rate_bytes_per_s)
        self.burst_bytes = float(burst_bytes)
        self._theoretical_done = float("-inf")

    def reserve(self, size_bytes: int, now_s: float) -> float:
        """Reserve ``size_bytes`` at time ``now_s``; returns the time (s) the last byte has crossed.

        The returned time is never before ``now_s``. Reservations are served in call order.
        """
        self._theoretical_done = max(self._theoretical_done, now_s) + size_bytes / self.rate
        return max(now_s, self._theoretical_done - self.burst_bytes / self.rate)
