"""Whether the agent's wall clock can be believed. Every event is stamped with it, and the fleet server
refuses events further ahead of its own clock, or older, than it takes (`[fleet] max_event_ahead_seconds`
and `max_event_age_days`); refused events leave the report queue and are only counted. A box without a
real-time clock that boots offline starts in 1970, and a clock that runs ahead is stepped back by NTP later:
both are warned of, with the fix.
"""

from __future__ import annotations

from datetime import datetime, timezone

CLOCK_FLOOR = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
"""No clock running this code can be earlier than its release (Unix seconds)."""
CLOCK_FIX = "set the clock (NTP: chrony or systemd-timesyncd)"
"""What the clock warnings ask for."""


def clock_warning(now: float, time_refusal: str | None = None) -> str | None:
    """Why the wall clock reading `now` (Unix seconds) cannot be believed, naming the fix; None when it can.
    time_refusal: the server's reason for refusing an event for its time since it last took a report
    without such a refusal (FleetSync.clock_refusal)."""
    if now < CLOCK_FLOOR:
        return (
            f"the wall clock reads {_utc(now)}, before {_utc(CLOCK_FLOOR)} when this agent was released: "
            f"events are stamped with it and the server refuses them; {CLOCK_FIX}"
        )
    if time_refusal:
        return (
            f"the server refuses events for their time ({time_refusal}): the wall clock is off and those "
            f"events are dropped; {CLOCK_FIX}"
        )
    return None


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
