"""The server's state behind one interface: people and the gallery revision log, agents, events, tokens,
the admin audit log.

Implementations: `facefleet.server.state.sqlite.state.SqliteState` (the embedded default). The interface asks
for nothing SQLite-specific, so a PostgreSQL implementation can serve a fleet that outgrows one machine: every
method is one transaction, revisions are plain integers, times are microseconds since the epoch, and queries
are keyed by indexed columns.

The gallery is a log of revisions. Every change (add, replace, update, delete of one person) is one
revision, and the log records which people it touched. `changes_since(R)` answers a watcher at revision R
with the current state of the people touched after R (upserts) and the ids of those that no longer exist
(deletes), read in one consistent transaction. The log keeps the last `log_revisions` revisions; a watcher
further behind gets `snapshot()` instead. All methods are blocking; async callers run them in a thread.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime

from facefleet.link.events import Event
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter, AuditPage
from facefleet.server.domain.paging import PageSeal
from facefleet.server.domain.queries import (
    AttributeCounts,
    DoorAccess,
    EventCursor,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
)
from facefleet.server.domain.records import AgentInfo, Crop, TokenRecord
from facefleet.server.state.devices import DeviceState
from facefleet.server.state.models import ModelState
from facefleet.server.state.snapshots import SnapshotState


class State(abc.ABC):
    """Durable server state. Methods raise NotFoundError, AlreadyExistsError or StateError
    (facefleet.server.errors).
    `models` holds the model catalogue and rollouts (facefleet.server.state.models), `devices` each device's
    status and certificates (facefleet.server.state.devices), `snapshots` the face snapshots agents report
    (facefleet.server.state.snapshots)."""

    models: ModelState
    devices: DeviceState
    snapshots: SnapshotState

    # -- gallery -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def gallery_id(self) -> str:
        """A random id fixed when the database was created: agents holding another id need a snapshot."""

    @abc.abstractmethod
    def page_seal(self) -> PageSeal:
        """What seals and checks the page tokens of this state's listings (facefleet.server.domain.paging):
        the same on every replica of the state, and across restarts."""

    @abc.abstractmethod
    def head_revision(self) -> int:
        """The latest gallery revision (0 before the first change)."""

    @abc.abstractmethod
    def add_person(
        self, person: Person, crops: Sequence[Crop], now: datetime, *, snapshots: Sequence[str] = ()
    ) -> Person:
        """Store a new person as one revision and return it as stored; AlreadyExistsError if id is taken.
        snapshots: ids of face snapshots the person was enrolled from, marked enrolled in the same
        transaction; FailedPreconditionError (nothing stored) when any of them is enrolled already or gone."""

    @abc.abstractmethod
    def replace_person(
        self,
        person: Person,
        crops: Sequence[Crop],
        now: datetime,
        *,
        append: bool,
        snapshots: Sequence[str] = (),
    ) -> Person:
        """Create or replace a person as one revision. append=False replaces the face: every embedding (of
        every model) and crop goes, and `person`'s and `crops` come; append=True adds to both.
        snapshots: as for add_person."""

    @abc.abstractmethod
    def update_person(
        self,
        person_id: str,
        now: datetime,
        *,
        display_name: str | None = None,
        groups: tuple[str, ...] | None = None,
        metadata_json: str | None = None,
    ) -> Person:
        """Change the given fields (None keeps one) as one revision; NotFoundError for an unknown id."""

    @abc.abstractmethod
    def replace_model_embeddings(
        self,
        person_id: str,
        model_id: str,
        embeddings: Sequence[Embedding],
        now: datetime,
        *,
        revision: int | None = None,
    ) -> int | None:
        """Replace one model's embeddings of a person as one revision (crops and other models' embeddings
        stay); return the revision, or None when the person no longer exists or, with `revision`, has
        changed since it was read at that revision (embeddings computed from what was read then would
        overwrite newer ones)."""

    @abc.abstractmethod
    def delete_person(self, person_id: str, now: datetime) -> int:
        """Erase a person, their embeddings, crops and face snapshots as one revision; return it.
        NotFoundError if unknown."""

    @abc.abstractmethod
    def get_person(self, person_id: str, *, with_vectors: bool = True) -> Person:
        """One person (NotFoundError if unknown); without embeddings when with_vectors is False."""

    @abc.abstractmethod
    def list_people(
        self,
        *,
        after: str = "",
        limit: int = 100,
        group: str = "",
        search: str = "",
        person_ids: Sequence[str] = (),
    ) -> list[Person]:
        """People with person_id > after, sorted by id, at most limit, without embeddings; search: only
        those whose id or display name contains it (ASCII letters in any case); person_ids: only these."""

    @abc.abstractmethod
    def crop_counts(self, person_ids: Sequence[str]) -> dict[str, int]:
        """How many face crops are kept for each of these people (0 for one with none or unknown)."""

    @abc.abstractmethod
    def crops(self, person_id: str) -> list[Crop]:
        """The aligned face crops kept for a person, oldest first."""

    @abc.abstractmethod
    def changes_since(self, revision: int) -> GalleryDelta | None:
        """The delta from `revision` to the head, or None when the log no longer reaches back that far."""

    @abc.abstractmethod
    def snapshot(self) -> GalleryDelta:
        """The whole gallery at the head revision, as a snapshot delta from 0."""

    # -- agents --------------------------------------------------------------------------------------

    @abc.abstractmethod
    def register_agent(self, registration: Registration, now: datetime) -> AgentInfo:
        """Insert or update an agent from what it reported; registered_at is kept on re-registration."""

    @abc.abstractmethod
    def get_agent(self, device_id: str) -> AgentInfo | None: ...

    @abc.abstractmethod
    def touch_agent(
        self,
        device_id: str,
        now: datetime,
        *,
        gallery_revision: int | None = None,
        health: Mapping[str, float] | None = None,
    ) -> None:
        """Record that an agent was seen, and optionally its applied revision and health figures."""

    @abc.abstractmethod
    def list_agents(self, device_ids: Sequence[str] = ()) -> list[AgentInfo]:
        """Registered agents sorted by device id (only device_ids when given)."""

    # -- events --------------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_events(self, events: Sequence[Event]) -> tuple[int, int]:
        """Store the events whose ids are new, in one transaction; return (stored, duplicates)."""

    @abc.abstractmethod
    def event_devices(self, event_ids: Sequence[str]) -> dict[str, str]:
        """The stored events among event_ids → the device each belongs to."""

    @abc.abstractmethod
    def list_events(self, flt: EventFilter, cursor: EventCursor | None, limit: int) -> EventPage:
        """Matching events, newest first (ties by event id, descending), after cursor."""

    @abc.abstractmethod
    def count_events(
        self, flt: EventFilter, interval_s: int, *, per_device: bool = True
    ) -> list[IntervalCount]:
        """Events per interval (aligned to the epoch) per device, sorted by start then device; without
        per_device, fleet-wide (device_id '')."""

    @abc.abstractmethod
    def expression_counts(self, flt: EventFilter, *, per_device: bool) -> list[ExpressionCount]:
        """Face events per expression label: fleet-wide rows (device_id ''), then per device if asked."""

    @abc.abstractmethod
    def unknown_rates(self, flt: EventFilter) -> list[UnknownRate]:
        """Face events and unknown-face events per device, sorted by device."""

    @abc.abstractmethod
    def access_summary(self, flt: EventFilter) -> list[DoorAccess]:
        """Granted and denied access events per device and door."""

    @abc.abstractmethod
    def attribute_counts(self, flt: EventFilter) -> list[AttributeCounts]:
        """Face events per device with how many had each estimated gender and age band, sorted by device;
        only devices with face events. Kinds and person_ids in flt are ignored (face events only)."""

    @abc.abstractmethod
    def expire_events(self, before: datetime) -> int:
        """Delete the events before `before` and the rollup buckets that end by then (retention); how many
        events. Cut on a day boundary, aggregates stay exact."""

    # -- operator tokens -----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_token(self, record: TokenRecord) -> None:
        """Store a token record; AlreadyExistsError when its name is taken."""

    @abc.abstractmethod
    def find_token(self, token_id: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    def revoke_token(self, name: str) -> None:
        """Delete a token by name; NotFoundError when there is none."""

    # -- admin audit log -----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append an entry to the admin audit log; return it with its entry_id."""

    @abc.abstractmethod
    def list_audit(self, flt: AuditFilter, after: AuditCursor | None, limit: int) -> AuditPage:
        """Matching entries, newest first (ties by entry_id, descending), after cursor, at most limit."""

    @abc.abstractmethod
    def expire_audit(self, before: datetime) -> int:
        """Delete the admin audit entries before `before` (retention); how many."""

    # -- lifecycle -----------------------------------------------------------------------------------

    latest_schema: int
    """The schema version of this server's code."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version the database is at now, read each time: above latest_schema once a newer
        server upgraded it."""

    @abc.abstractmethod
    def close(self) -> None: ...
