"""Link profiles: what one emulated network link does to the bytes that cross it.

A :class:`LinkProfile` describes a link between two agents, applied by the shaping proxy
(:mod:`agent.network.shaper`) to both directions of every TCP connection between them:

* ``rtt_ms = (min, max)`` is the **round-trip** time in milliseconds. The proxy delays each direction
  by half of it, so a request/response exchange takes one RTT. Each link draws its base RTT once from
  the range (deterministically, from the scenario seed and the pair of agents); with ``rtt_change_s``
  set the base RTT is drawn again every ``rtt_change_s`` seconds ("varying").
* ``jitter_ms`` spreads each chunk's RTT uniformly over ``base ± jitter_ms / 2`` (without reordering
  bytes: a TCP stream stays in order, so a chunk never overtakes the one before it).
* ``loss`` is the probability that one segment of ``segment_bytes`` is lost, per direction. On a TCP
  stream a loss cannot drop bytes; it shows up as a stall of one retransmission timeout,
  ``rto_ms = max(min_rto_ms, 2 * rtt_ms[1])`` (sized from the worst RTT the link can show, as TCP's
  SRTT + 4·RTTVAR is), during which the lost segment and everything behind it wait. A retransmission
  can be lost again (same probability), doubling the wait each time, as TCP backs off; eight losses
  in a row (always, at ``loss = 1``) make the direction a black hole that delivers nothing more.
* ``reset_fraction`` is the share of losses that reset the connection instead of stalling it (a
  middlebox dropping state): both sides see ECONNRESET. Only ``unstable`` uses it by default.
* ``bandwidth_mbps`` caps each direction at that many megabits (10^6 bit) per second with a token
  bucket; ``None`` leaves it unlimited.

Built-ins: ``perfect``, ``good``, ``average``, ``poor``, ``unstable`` (see :data:`BUILTIN_PROFILES`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.errors import ConfigError


class LinkProfile(BaseModel):
    """Conditions of one emulated link. Times in milliseconds, loss as a fraction, bandwidth in Mbit/s."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="custom", description="label shown in tables and logs")
    rtt_ms: tuple[float, float] = Field(
        default=(0.0, 0.0),
        description="ROUND-TRIP time range (min, max) in ms; half is applied in each direction. "
        "A single number means a fixed RTT.",
    )
    jitter_ms: float = Field(default=0.0, ge=0, le=10_000, description="per-chunk RTT spread, ± half, ms")
    rtt_change_s: float | None = Field(
        default=None, gt=0, description="re-draw the link's RTT from the range this often (s); None = fixed"
    )
    loss: float = Field(default=0.0, ge=0, le=1, description="probability a segment is lost, per direction")
    reset_fraction: float = Field(
        default=0.0, ge=0, le=1, description="share of losses that reset the connection instead of stalling"
    )
    bandwidth_mbps: float | None = Field(
        default=None, gt=0, description="cap per direction, megabit/s; None = unlimited"
    )
    min_rto_ms: float = Field(
        default=200.0, gt=0, le=60_000, description="floor of the retransmission timeout"
    )
    segment_bytes: int = Field(default=1448, ge=64, le=1 << 20, description="bytes per lossy segment (MSS)")

    @field_validator("rtt_ms", mode="before")
    @classmethod
    def _scalar_rtt(cls, value: Any) -> Any:
        if isinstance(value, int | float):
            return (value, value)
        return value

    @model_validator(mode="after")
    def _rtt_range(self) -> LinkProfile:
        low, high = self.rtt_ms
        if low < 0 or high < low:
            raise ValueError(
                f"rtt_ms must be [min, max] with 0 <= min <= max (milliseconds), got {self.rtt_ms}"
            )
        if high > 120_000:
            raise ValueError(f"rtt_ms max {high} ms is above 120000 ms; give round-trip milliseconds")
        return self

    @property
    def rto_ms(self) -> float:
        """Retransmission timeout, ms: the stall one lost segment causes (doubling per repeated loss)."""
        return max(self.min_rto_ms, 2.0 * self.rtt_ms[1])

    @property
    def is_varying(self) -> bool:
        """Whether the link's base RTT changes over time (``rtt_change_s`` set and a non-empty range)."""
        return self.rtt_change_s is not None and self.rtt_ms[1] > self.rtt_ms[0]

    @property
    def bytes_per_second(self) -> float | None:
        """The bandwidth cap in bytes per second, or ``None`` when unlimited."""
        return None if self.bandwidth_mbps is None else self.bandwidth_mbps * 1e6 / 8

    def describe(self) -> str:
        """A one-line human summary, e.g. ``poor: RTT 150-300 ms ±10, loss 5%, unlimited``."""
        low, high = self.rtt_ms
        rtt = f"{low:g} ms" if low == high else f"{low:g}-{high:g} ms"
        if self.is_varying:
            rtt += f" varying/{self.rtt_change_s:g}s"
        if self.jitter_ms:
            rtt += f" ±{self.jitter_ms / 2:g}"
        bandwidth = "unlimited" if self.bandwidth_mbps is None else f"{self.bandwidth_mbps:g} Mbit/s"
        resets = f" ({self.reset_fraction:.0%} resets)" if self.reset_fraction and self.loss else ""
        return f"{self.name}: RTT {rtt}, loss {self.loss:.2%}{resets}, {bandwidth}"


BUILTIN_PROFILES: dict[str, LinkProfile] = {
    "perfect": LinkProfile(name="perfect"),
    "good": LinkProfile(name="good", rtt_ms=(10, 50), jitter_ms=2, loss=0.001),
    "average": LinkProfile(name="average", rtt_ms=(50, 150), jitter_ms=5, loss=0.01),
    "poor": LinkProfile(name="poor", rtt_ms=(150, 300), jitter_ms=10, loss=0.05),
    "unstable": LinkProfile(
        name="unstable", rtt_ms=(50, 500), jitter_ms=20, rtt_change_s=2.0, loss=0.10, reset_fraction=0.2
    ),
}
"""The project's named profiles. ``unstable`` re-draws its RTT every 2 s and resets on 20% of losses."""


def builtin_profile(name: str) -> LinkProfile:
    """The built-in profile called ``name``; :class:`ConfigError` naming the choices otherwise."""
    try:
        return BUILTIN_PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown link profile {name!r}; use one of {', '.join(BUILTIN_PROFILES)} or a table of fields"
        ) from None


def worse(first: LinkProfile, second: LinkProfile) -> LinkProfile:
    """Field by field the worse of two profiles: a link is no better than either end's own profile.

    Used when an agent's own profile (its access link) meets the region matrix: RTT bounds, jitter,
    loss and resets take the larger value, bandwidth the smaller cap, variation the faster change.
    """
    if first == second:
        return first
    caps = [cap for cap in (first.bandwidth_mbps, second.bandwidth_mbps) if cap is not None]
    changes = [change for change in (first.rtt_change_s, second.rtt_change_s) if change is not None]
    return LinkProfile(
        name=first.name if first.name == second.name else f"{first.name}+{second.name}",
        rtt_ms=(max(first.rtt_ms[0], second.rtt_ms[0]), max(first.rtt_ms[1], second.rtt_ms[1])),
        jitter_ms=max(first.jitter_ms, second.jitter_ms),
        rtt_change_s=min(changes) if changes else None,
        loss=max(first.loss, second.loss),
        reset_fraction=max(first.reset_fraction, second.reset_fraction),
        bandwidth_mbps=min(caps) if caps else None,
        min_rto_ms=max(first.min_rto_ms, second.min_rto_ms),
        segment_bytes=min(first.segment_bytes, second.segment_bytes),
    )
