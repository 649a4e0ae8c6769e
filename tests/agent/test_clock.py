"""The agent's wall clock check (facefleet.agent.domain.clock): a clock before the agent's release, or one
whose events the server refuses for their time, is warned of with the fix."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from facefleet.agent.domain.clock import CLOCK_FLOOR, clock_warning


def test_the_floor_is_the_release_date() -> None:
    assert datetime.fromtimestamp(CLOCK_FLOOR, timezone.utc) == datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("now", "reading"),
    [
        (0.0, "1970-01-01T00:00:00Z"),  # no real-time clock, booted offline
        (86400.0 * 365 + 5, "1971-01-01T00:00:05Z"),
        (CLOCK_FLOOR - 1, "2025-12-31T23:59:59Z"),
    ],
)
def test_a_clock_before_the_floor_is_implausible_and_the_warning_names_the_fix(
    now: float, reading: str
) -> None:
    warning = clock_warning(now)
    assert warning is not None
    assert warning.startswith(f"the wall clock reads {reading}, before 2026-01-01T00:00:00Z")
    assert "set the clock (NTP: chrony or systemd-timesyncd)" in warning


def test_a_clock_from_the_floor_on_is_believed_unless_the_server_refuses_events_for_their_time() -> None:
    assert clock_warning(CLOCK_FLOOR) is None
    assert clock_warning(max(time.time(), CLOCK_FLOOR + 86400)) is None
    refusal = "event time 2027-12-07T10:00:00+00:00 is ahead of the server's clock"
    warning = clock_warning(CLOCK_FLOOR + 86400, refusal)
    assert warning is not None
    assert f"({refusal})" in warning
    assert "the wall clock is off" in warning
    assert warning.endswith("set the clock (NTP: chrony or systemd-timesyncd)")
    before = clock_warning(0.0, refusal)  # the floor says more: what the clock reads
    assert before is not None and before.startswith("the wall clock reads 1970-01-01T00:00:00Z")
