"""The fleet link's session messages: an agent's registration, the server's welcome, the heartbeat of
an idle watch stream, and what the server did with a report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from facefleet.link.checks import (
    MAX_LABEL_CHARS,
    MAX_MAP_ENTRIES,
    MAX_REVISION,
    check_groups,
    check_id,
    check_text,
)
from facefleet.link.errors import LinkError
from facefleet.link.models import ModelStatus, check_model_precisions, check_statuses

WATCH_END_KEY = "facefleet-watch-end"
"""Trailing metadata of a Watch stream the server ended on purpose, with one of the reasons below."""
WATCH_END_MAX_AGE = "max-age"
"""The stream reached `[fleet] watch_max_age_seconds`: reconnect at once (a load balancer may pick another
replica) and resume from the applied revision."""
WATCH_END_SHUTDOWN = "shutdown"
"""The server is stopping: reconnect after the usual backoff."""


@dataclass(frozen=True)
class Heartbeat:
    """Sent on an idle Watch stream, with the server's current revision and clock."""

    gallery_revision: int
    server_time: datetime | None = None


@dataclass(frozen=True)
class Registration:
    """What an agent tells the server when it registers."""

    device_id: str
    agent_version: str = ""
    hostname: str = ""
    model_versions: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    gallery_revision: int = 0
    gallery_id: str = ""
    model_statuses: tuple[ModelStatus, ...] = ()
    groups: tuple[str, ...] = ()
    model_precisions: Mapping[str, str] = field(default_factory=dict)
    """What each active model runs at, by task (facefleet.link.models.check_model_precisions)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_statuses", check_statuses(tuple(self.model_statuses)))
        object.__setattr__(self, "model_precisions", check_model_precisions(dict(self.model_precisions)))
        check_id("device_id", self.device_id)
        object.__setattr__(self, "groups", check_groups(tuple(self.groups)))
        check_text("agent_version", self.agent_version, MAX_LABEL_CHARS)
        check_text("hostname", self.hostname, 255)
        if not 0 <= self.gallery_revision <= MAX_REVISION:
            raise LinkError(
                f"gallery_revision {self.gallery_revision} is out of range: 0 for no gallery, else a "
                f"revision this server sent (at most {MAX_REVISION})"
            )
        if len(self.capabilities) > MAX_MAP_ENTRIES or any(
            len(c) > MAX_LABEL_CHARS for c in self.capabilities
        ):
            raise LinkError(f"capabilities: at most {MAX_MAP_ENTRIES} short entries")
        if len(self.model_versions) > MAX_MAP_ENTRIES or any(
            len(k) > MAX_LABEL_CHARS or len(v) > MAX_LABEL_CHARS for k, v in self.model_versions.items()
        ):
            raise LinkError(f"model_versions: at most {MAX_MAP_ENTRIES} short entries")


@dataclass(frozen=True)
class Welcome:
    """What Register answers."""

    gallery_revision: int
    gallery_id: str
    embedding_models: tuple[str, ...]
    max_report_events: int
    heartbeat_seconds: int
    server_time: datetime | None = None
    cluster_threshold: float | None = None
    """The cosine at which the server groups unknown faces (None: a server that does not say)."""
    server_version: str = ""
    """The server's software version ("" from a server that does not say)."""

    def __post_init__(self) -> None:
        threshold = self.cluster_threshold
        if threshold is not None and not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
            raise LinkError(f"cluster_threshold must be a cosine from -1 to 1, got {threshold}")


EVENT_TIME_REFUSAL = "event time "
"""How the reason begins when the server refuses a reported event for its time (further ahead of the server's
clock, or older, than it takes): the reporting device's clock is off."""


def refused_for_time(reason: str) -> bool:
    """The server refused an event, with this reason, for its time."""
    return reason.startswith(EVENT_TIME_REFUSAL)


@dataclass(frozen=True)
class ReportOutcome:
    """Result of storing a batch: new events, repeats, and refused events (event_id, reason). Every event
    neither refused nor deferred is durably stored."""

    stored: int = 0
    duplicates: int = 0
    rejected: tuple[tuple[str, str], ...] = ()
    deferred: tuple[tuple[str, str], ...] = ()
    """(event_id, reason) of events the server cannot store yet (a kind or decision of a newer agent):
    neither stored nor refused; the agent keeps them and reports them again later."""
