"""The agent's own records of its link to the server: where its gallery stands on the server, and the
events queued for the server. The link's messages themselves are facefleet.link types.

Two revisions are in play. The store's own gallery revision moves with every change (local enrolments too)
and is what the matcher watches; the *server* revision numbers the server's changes and is what the agent
resumes its Watch from. A `SyncPoint` records the latter.
"""

from __future__ import annotations

from dataclasses import dataclass

from facefleet.link.events import Event

CERTIFICATE_EXPIRY_HEALTH = "certificate_expires_at"
"""The health figure that tells the server when this device's certificate expires (Unix seconds)."""
CLOCK_HEALTH = "clock_implausible"
"""The health figure that is 1 while the agent's wall clock cannot be believed (domain.clock), else 0."""
SYNC_HEALTH = (
    "reports_pending",
    "reports_dropped",
    "reports_refused",
    "reports_deferred",
    CLOCK_HEALTH,
    CERTIFICATE_EXPIRY_HEALTH,
)
"""The figures the link to the server (agent.fleet.sync) adds to the service's health(): they replace the
service's of the same names and are kept before them when there are more than the server takes."""


@dataclass(frozen=True)
class SyncPoint:
    """The server gallery the store's people came from: its revision and gallery_id, the embedding models
    that were watched, and when the last delta was applied (unix seconds; None: never synced)."""

    revision: int = 0
    gallery_id: str = ""
    models: tuple[str, ...] = ()
    applied_at: float | None = None


@dataclass(frozen=True)
class QueuedReport:
    """An event waiting in the store until the server acknowledges it. event: the link event to report;
    gallery_revision: the server revision applied when it was queued; created_at: unix s."""

    report_id: int
    event_id: str
    event: Event
    gallery_revision: int
    created_at: float
