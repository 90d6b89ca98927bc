"""One timestamp format everywhere: ISO 8601 in UTC with a trailing ``Z`` and millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def format_utc(moment: datetime) -> str:
    """Render ``moment`` as ``2026-11-28T06:03:33.123Z`` (naive datetimes are taken to be UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc), PlainSerializer(format_utc, return_type=str)]
"""A pydantic field type: always UTC, always serialized by :func:`format_utc`."""


def run_folder_stamp(moment: datetime | None = None) -> str:
    """A filesystem-safe UTC stamp for run folders, e.g. ``20261128T060333Z``."""
    return (moment or utc_now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
