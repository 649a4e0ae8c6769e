"""Dashboard query types: the event filter, paging tokens and the aggregate rows (plain dataclasses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from facefleet.link.checks import MAX_LABEL_CHARS, check_id, check_utc
from facefleet.link.errors import LinkError
from facefleet.link.events import AGE_BANDS, DECISIONS, EVENT_KINDS, GENDERS, Decision, Event, EventKind
from facefleet.link.models import ModelStatus
from facefleet.server.domain.paging import (
    NOT_ISSUED,
    PageSeal,
    as_set,
    decode_token,
    encode_token,
    timed_cursor,
)
from facefleet.server.errors import InvalidArgumentError

MAX_RANGE = timedelta(days=400)
MAX_FILTER_VALUES = 100
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 31 * 86400
MAX_INTERVALS = 10_000
"""Intervals one count query may cover (per device): a chart's points, not a raw export."""
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(moment: datetime) -> int:
    """Microseconds since the UNIX epoch (how the state stores times)."""
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class EventFilter:
    """Events in [start, end) matching every non-empty list."""

    start: datetime
    end: datetime
    device_ids: tuple[str, ...] = ()
    person_ids: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()
    kinds: tuple[EventKind, ...] = ()
    cameras: tuple[str, ...] = ()
    doors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        start, end = time_range("filter", ("start", self.start), ("end", self.end))
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if self.end - self.start > MAX_RANGE:
            raise InvalidArgumentError(f"filter time range is over {MAX_RANGE.days} days; narrow it")
        for name, values in (("device_ids", self.device_ids), ("person_ids", self.person_ids)):
            if len(values) > MAX_FILTER_VALUES:
                raise InvalidArgumentError(f"filter {name}: at most {MAX_FILTER_VALUES} values")
            for value in values:
                check_id(name[:-1], value)
        for name, values in (("cameras", self.cameras), ("doors", self.doors)):
            if len(values) > MAX_FILTER_VALUES:
                raise InvalidArgumentError(f"filter {name}: at most {MAX_FILTER_VALUES} values")
            for value in values:
                check_filter_name(name, value)
        # one of each: a list of millions of repeats would reach the SQL as millions of parameters
        object.__setattr__(self, "decisions", tuple(dict.fromkeys(self.decisions)))
        object.__setattr__(self, "kinds", tuple(dict.fromkeys(self.kinds)))
        if any(d not in DECISIONS for d in self.decisions):
            raise InvalidArgumentError(f"filter decisions must be among {', '.join(DECISIONS)}")
        if any(k not in EVENT_KINDS for k in self.kinds):
            raise InvalidArgumentError(f"filter kinds must be among {', '.join(EVENT_KINDS)}")

    @property
    def start_us(self) -> int:
        return to_us(self.start)

    @property
    def end_us(self) -> int:
        return to_us(self.end)

    def scope(self) -> tuple[object, ...]:
        """What a page token of events with this filter is bound to: every field but the time range
        (facefleet.server.domain.paging)."""
        return (
            as_set(self.device_ids),
            as_set(self.person_ids),
            as_set(self.decisions),
            as_set(self.kinds),
            as_set(self.cameras),
            as_set(self.doors),
        )

    def without_persons(self, query: str) -> EventFilter:
        if self.person_ids:
            raise InvalidArgumentError(f"{query} cannot filter by person_ids; use ListEvents")
        return self


def time_range(
    what: str, start: tuple[str, datetime], end: tuple[str, datetime]
) -> tuple[datetime, datetime]:
    """A filter's half-open time range, each end given with its name, in UTC; InvalidArgumentError when an end
    has no time zone (LinkError) or the range is empty."""
    (start_name, start_time), (end_name, end_time) = start, end
    start_time = check_utc(f"{what} {start_name}", start_time)
    end_time = check_utc(f"{what} {end_name}", end_time)
    if end_time <= start_time:
        raise InvalidArgumentError(
            f"{what} {end_name} {end_time.isoformat()} must be after {start_name} {start_time.isoformat()}"
        )
    return start_time, end_time


def check_filter_name(name: str, value: str) -> None:
    """A camera or door name as events carry it: 1–MAX_LABEL_CHARS characters, none a control character
    (agents name them with letters, digits, '_' and '-', at most 32)."""
    if not value or len(value) > MAX_LABEL_CHARS or any(ord(ch) < 32 for ch in value):
        raise InvalidArgumentError(
            f"filter {name}: {value[:80]!r} is not a {name[:-1]} name: use 1–{MAX_LABEL_CHARS} characters "
            f"without control characters, the name in the agent's [[{name}]] config"
        )


def page_size(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"page_size must be 1–{MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})")
    return requested or DEFAULT_PAGE_SIZE


def check_interval(seconds: int, flt: EventFilter) -> int:
    """interval_seconds of a count query over flt's range: within its bounds and at most MAX_INTERVALS."""
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise InvalidArgumentError(
            f"interval_seconds must be {MIN_INTERVAL_S}–{MAX_INTERVAL_S}, got {seconds}"
        )
    intervals = -(-(flt.end_us - flt.start_us) // (seconds * 1_000_000))
    if intervals > MAX_INTERVALS:
        raise InvalidArgumentError(
            f"{intervals:,} intervals of {seconds} s in the filter's range; the limit is {MAX_INTERVALS:,}: "
            "use a longer interval_seconds or a shorter range"
        )
    return seconds


@dataclass(frozen=True)
class EventCursor:
    """Where a page of events (newest first) ended: the last event's time and id, and the seal of its token
    (facefleet.server.domain.paging)."""

    time_us: int
    event_id: str
    seal: str = ""

    def encode(self) -> str:
        return encode_token("e", self.seal, self.time_us, self.event_id)

    @classmethod
    def decode(cls, token: str) -> EventCursor:
        return cls(*timed_cursor(token, "e"))

    def sealed(self, key: PageSeal, flt: EventFilter) -> EventCursor:
        """This cursor with the seal of its listing with `flt`."""
        return replace(self, seal=key.seal("e", (self.time_us, self.event_id), flt.scope()))

    def check(self, key: PageSeal, flt: EventFilter) -> None:
        """InvalidArgumentError (NOT_ISSUED) unless this server sealed the cursor for a listing with `flt`."""
        key.check("e", (self.time_us, self.event_id), flt.scope(), self.seal)


@dataclass(frozen=True)
class PeopleCursor:
    """Where a page of people (by person id) ended, and the seal of its token (bound to the group, search
    and person ids listed: people_scope)."""

    person_id: str
    seal: str = ""

    def encode(self) -> str:
        return encode_token("p", self.seal, self.person_id)

    @classmethod
    def decode(cls, token: str) -> PeopleCursor:
        seal, (person_id,) = decode_token(token, "p", 1)
        try:
            check_id("person_id", person_id)
        except LinkError:
            raise InvalidArgumentError(NOT_ISSUED) from None
        return cls(person_id, seal)

    def sealed(self, key: PageSeal, scope: Sequence[object]) -> PeopleCursor:
        return replace(self, seal=key.seal("p", (self.person_id,), scope))

    def check(self, key: PageSeal, scope: Sequence[object]) -> None:
        key.check("p", (self.person_id,), scope, self.seal)


def people_scope(group: str, search: str, person_ids: Iterable[str]) -> tuple[object, ...]:
    """What a people listing's page token is bound to (facefleet.server.domain.paging)."""
    return (group, search, as_set(person_ids))


@dataclass(frozen=True)
class EventPage:
    events: tuple[Event, ...]
    next_cursor: EventCursor | None


@dataclass(frozen=True)
class IntervalCount:
    start: datetime
    device_id: str
    count: int


@dataclass(frozen=True)
class ExpressionCount:
    device_id: str
    label: str
    count: int


@dataclass(frozen=True)
class UnknownRate:
    device_id: str
    face_events: int
    unknown_events: int

    @property
    def rate(self) -> float:
        return self.unknown_events / self.face_events if self.face_events else 0.0


@dataclass(frozen=True)
class DoorAccess:
    device_id: str
    door: str
    granted: int
    denied: int


@dataclass(frozen=True)
class AttributeCount:
    """Face events with one estimated gender and age band."""

    gender: str
    age_band: str
    count: int


@dataclass(frozen=True)
class AttributeCounts:
    """The estimated genders and age bands of one device's face events (device_id '': of every device the
    filter covers). face_events: all of them, with attributes or without (from agents with
    `[attributes] enabled = false`); counts: the non-zero ones per gender and age band, by gender (female,
    male) then age band (youngest first). Each event counts under the gender and band its agent reported
    (its gender is "male" when the male probability is above 0.5)."""

    device_id: str
    face_events: int
    counts: tuple[AttributeCount, ...] = ()

    @property
    def estimated(self) -> int:
        """Face events with attributes."""
        return sum(c.count for c in self.counts)

    @property
    def genders(self) -> dict[str, int]:
        """Estimated face events per gender: every gender, female first."""
        return _tally(GENDERS, ((c.gender, c.count) for c in self.counts))

    @property
    def age_bands(self) -> dict[str, int]:
        """Estimated face events per age band: every band, youngest first."""
        return _tally(AGE_BANDS, ((c.age_band, c.count) for c in self.counts))

    @classmethod
    def of(cls, device_id: str, face_events: int, cells: Iterable[AttributeCount]) -> AttributeCounts:
        """A device's counts from its cells in any order: those of one gender and band added up, zeros left
        out, ordered by gender then age band."""
        added: dict[tuple[str, str], int] = {}
        for c in cells:
            added[(c.gender, c.age_band)] = added.get((c.gender, c.age_band), 0) + c.count
        ordered = sorted(
            (key for key, n in added.items() if n),
            key=lambda key: (_rank(GENDERS, key[0]), _rank(AGE_BANDS, key[1]), key),
        )
        return cls(device_id, face_events, tuple(AttributeCount(g, b, added[(g, b)]) for g, b in ordered))

    @classmethod
    def total(cls, rows: Iterable[AttributeCounts]) -> AttributeCounts:
        """The fleet-wide counts (device_id '') of several devices' counts."""
        rows = tuple(rows)
        return cls.of("", sum(r.face_events for r in rows), (c for r in rows for c in r.counts))


def _rank(known: tuple[str, ...], value: str) -> int:
    return known.index(value) if value in known else len(known)


def _tally(labels: tuple[str, ...], counted: Iterable[tuple[str, int]]) -> dict[str, int]:
    tally = dict.fromkeys(labels, 0)
    for label, count in counted:
        tally[label] = tally.get(label, 0) + count
    return tally


@dataclass(frozen=True)
class AgentStatus:
    """An agent as a dashboard sees it."""

    device_id: str
    online: bool
    watching: bool
    last_seen: datetime
    registered_at: datetime
    agent_version: str
    hostname: str
    model_versions: Mapping[str, str]
    capabilities: tuple[str, ...]
    gallery_revision: int
    revision_lag: int
    health: Mapping[str, float] = field(default_factory=dict)
    model_statuses: tuple[ModelStatus, ...] = ()
    groups: tuple[str, ...] = ()
    device_status: str = "active"
    certificate_expires_at: datetime | None = None
    model_precisions: Mapping[str, str] = field(default_factory=dict)
