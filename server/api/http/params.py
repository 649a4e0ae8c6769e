"""Time parameters of queries, bounded so that no value reaches a date computation or the database outside
what they hold: between 1970 and 9999, with a zone."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import AfterValidator

EARLIEST = datetime(1970, 1, 2, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)


def _plausible(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("give the time with its zone, e.g. 2026-05-01T08:00:00Z")
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"give a time between {EARLIEST.date()} and {LATEST.date()}")
    return value


InRange = AfterValidator(_plausible)
"""Validates an optional time parameter: `Annotated[datetime | None, Query(...), InRange]`."""
