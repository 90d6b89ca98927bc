"""Short, human text for the faces: ids, durations, amounts and clock times."""

from __future__ import annotations

from datetime import UTC, datetime

WEI_PER_MON = 10**18


def short_id(value: str | None, keep: int = 6) -> str:
    """``12D3KooWAbc…xyz123`` style: the first and last ``keep`` characters; '–' for nothing."""
    if not value:
        return "–"
    return value if len(value) <= 2 * keep + 2 else f"{value[:keep]}…{value[-keep:]}"


def format_duration(seconds: float | None) -> str:
    """``5 min 12 s``, ``2 h 3 min``, ``40 s``; '–' when unknown."""
    if seconds is None:
        return "–"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def format_mon(wei: int) -> str:
    """An amount in wei as MON with up to 6 decimals, e.g. ``1.25 MON``; exact (integer arithmetic)."""
    whole, fraction = divmod(wei, WEI_PER_MON)
    decimals = f"{fraction:018d}"[:6].rstrip("0")
    return f"{whole:,}.{decimals} MON" if decimals else f"{whole:,} MON"


def clock_utc(moment: datetime | None) -> str:
    """``06:03:21Z``: the UTC time of day, the project's one time zone."""
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%H:%M:%SZ")
