"""/api/events and /api/fleet: what QueryService answers dashboards — events a page at a time, the
aggregates (counts per interval, expressions, unknown-face rate, door access, estimated genders and age
bands) and the fleet status. A "query" token is enough. Time ranges are half-open [start, end), ISO 8601
with a zone; the default is the last 24 hours."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from facefleet.link.checks import utc_now
from facefleet.link.events import AttributesResult, Decision, Event, EventKind
from facefleet.link.models import ModelStatus
from facefleet.server.api.http.auth import Handlers, QueryOperator
from facefleet.server.api.http.params import InRange
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.domain.queries import AgentStatus, AttributeCounts, EventFilter

router = APIRouter(tags=["events and fleet"], route_class=ProblemRoute, responses=ERROR_RESPONSES)
DEFAULT_RANGE = timedelta(days=1)


def event_filter(
    start: Annotated[datetime | None, Query(description="From (default: end - 24 h)"), InRange] = None,
    end: Annotated[datetime | None, Query(description="Until, excluded (default: now)"), InRange] = None,
    device_id: Annotated[list[str], Query(description="Only these devices (repeat the parameter)")] = [],  # noqa: B006
    person_id: Annotated[list[str], Query(description="Only these people")] = [],  # noqa: B006
    decision: Annotated[list[Decision], Query(description="Only these decisions")] = [],  # noqa: B006
    kind: Annotated[list[EventKind], Query(description="Only these kinds")] = [],  # noqa: B006
    camera: Annotated[list[str], Query(description="Only these cameras (names as agents report them)")] = [],  # noqa: B006
    door: Annotated[list[str], Query(description="Only these doors (only access events have one)")] = [],  # noqa: B006
) -> EventFilter:
    """The event filter of a request's query parameters."""
    until = end or utc_now()
    return EventFilter(
        start=start or until - DEFAULT_RANGE,
        end=until,
        device_ids=tuple(device_id),
        person_ids=tuple(person_id),
        decisions=tuple(decision),
        kinds=tuple(kind),
        cameras=tuple(camera),
        doors=tuple(door),
    )


Filter = Annotated[EventFilter, Depends(event_filter)]


class ExpressionOut(BaseModel):
    label: str
    probabilities: dict[str, float]


class AttributesOut(BaseModel):
    gender: str = Field(description="female or male: the more probable one")
    male_probability: float = Field(description="0–1; that of female is 1 minus it")
    age_years: float
    age_band: str = Field(description="0-12, 13-19, 20-29, 30-39, 40-49, 50-59 or 60+")

    @classmethod
    def of(cls, a: AttributesResult) -> AttributesOut:
        return cls(
            gender=a.gender, male_probability=a.male_probability, age_years=a.age_years, age_band=a.age_band
        )


class EventOut(BaseModel):
    event_id: str
    device_id: str
    time: datetime
    kind: EventKind
    decision: Decision
    camera: str
    person_id: str
    score: float
    margin: float
    expression: ExpressionOut | None
    quality: float
    model_versions: dict[str, str]
    gallery_revision: int
    door: str
    reason: str
    attributes: AttributesOut | None = Field(
        description="Estimated gender and age (face events of agents with [attributes] enabled = true); "
        "never used for access"
    )

    @classmethod
    def of(cls, e: Event) -> EventOut:
        expression = e.expression
        return cls(
            event_id=e.event_id,
            device_id=e.device_id,
            time=e.time,
            kind=e.kind,
            decision=e.decision,
            camera=e.camera,
            person_id=e.person_id,
            score=e.score,
            margin=e.margin,
            expression=None
            if expression is None
            else ExpressionOut(label=expression.label, probabilities=dict(expression.probabilities)),
            quality=e.quality,
            model_versions=dict(e.model_versions),
            gallery_revision=e.gallery_revision,
            door=e.door,
            reason=e.reason,
            attributes=None if e.attributes is None else AttributesOut.of(e.attributes),
        )


class EventPage(BaseModel):
    events: list[EventOut] = Field(description="Newest first")
    next_page_token: str = Field(description="Empty on the last page")


class IntervalCount(BaseModel):
    start: datetime
    device_id: str
    count: int


class Counts(BaseModel):
    counts: list[IntervalCount] = Field(description="By start, then device; empty intervals left out")


class ExpressionCount(BaseModel):
    device_id: str = Field(description="Empty in the fleet-wide rows")
    label: str
    count: int


class Expressions(BaseModel):
    counts: list[ExpressionCount] = Field(description="Fleet-wide rows first, then per device when asked")


class UnknownRate(BaseModel):
    device_id: str = Field(description="Empty in the fleet-wide row")
    face_events: int
    unknown_events: int
    rate: float


class UnknownRates(BaseModel):
    total: UnknownRate
    per_device: list[UnknownRate]


class DoorAccess(BaseModel):
    device_id: str
    door: str
    granted: int
    denied: int


class Access(BaseModel):
    doors: list[DoorAccess]


class AttributeCountOut(BaseModel):
    gender: str
    age_band: str
    count: int


class AttributeCountsOut(BaseModel):
    device_id: str = Field(description="Empty in the fleet-wide row")
    face_events: int = Field(description="Face events matching the filter, with attributes or without")
    estimated: int = Field(description="Of those, the ones with attributes")
    genders: dict[str, int] = Field(description="Estimated face events per gender: female, male")
    age_bands: dict[str, int] = Field(description="Estimated face events per age band, youngest first")
    gender_age_bands: list[AttributeCountOut] = Field(
        description="Per gender and age band, by gender then band; those without events left out"
    )

    @classmethod
    def of(cls, c: AttributeCounts) -> AttributeCountsOut:
        return cls(
            device_id=c.device_id,
            face_events=c.face_events,
            estimated=c.estimated,
            genders=c.genders,
            age_bands=c.age_bands,
            gender_age_bands=[
                AttributeCountOut(gender=x.gender, age_band=x.age_band, count=x.count) for x in c.counts
            ],
        )


class AttributeDistribution(BaseModel):
    total: AttributeCountsOut
    per_device: list[AttributeCountsOut] = Field(description="Only with per_device: by device")


class ModelStatusOut(BaseModel):
    task: str
    model_id: str
    rollout_id: int
    state: str
    reason: str
    time: datetime | None
    final: bool

    @classmethod
    def of(cls, s: ModelStatus) -> ModelStatusOut:
        return cls(
            task=s.task,
            model_id=s.model_id,
            rollout_id=s.rollout_id,
            state=s.state,
            reason=s.reason,
            time=s.time,
            final=s.final,
        )


class AgentOut(BaseModel):
    device_id: str
    online: bool = Field(description="Watching now, or seen within the server's online window")
    watching: bool
    last_seen: datetime
    registered_at: datetime
    agent_version: str
    hostname: str
    model_versions: dict[str, str]
    model_precisions: dict[str, str] = Field(
        description="What each active model runs at on the agent's device, by task: 'f32', 'bf16', or "
        "'int8 (<model id>)' when an INT8 variant runs in the float model's place"
    )
    capabilities: list[str]
    gallery_revision: int
    revision_lag: int
    health: dict[str, float]
    model_statuses: list[ModelStatusOut]
    groups: list[str]
    device_status: str
    certificate_expires: datetime | None

    @classmethod
    def of(cls, a: AgentStatus) -> AgentOut:
        return cls(
            device_id=a.device_id,
            online=a.online,
            watching=a.watching,
            last_seen=a.last_seen,
            registered_at=a.registered_at,
            agent_version=a.agent_version,
            hostname=a.hostname,
            model_versions=dict(a.model_versions),
            model_precisions=dict(a.model_precisions),
            capabilities=list(a.capabilities),
            gallery_revision=a.gallery_revision,
            revision_lag=a.revision_lag,
            health=dict(a.health),
            model_statuses=[ModelStatusOut.of(s) for s in a.model_statuses],
            groups=list(a.groups),
            device_status=a.device_status,
            certificate_expires=a.certificate_expires_at,
        )


class Fleet(BaseModel):
    agents: list[AgentOut]
    gallery_revision: int
    server_time: datetime


@router.get("/events", summary="Events, newest first, a page at a time", response_model=EventPage)
async def events(
    operator: QueryOperator,
    handlers: Handlers,
    flt: Filter,
    page_size: Annotated[int, Query(description="1–1000; 0 means 100")] = 0,
    page_token: Annotated[str, Query(description="next_page_token of the previous page")] = "",
) -> EventPage:
    page = await handlers.queries.events(flt, page_token, page_size)
    return EventPage(
        events=[EventOut.of(e) for e in page.events],
        next_page_token=page.next_cursor.encode() if page.next_cursor else "",
    )


@router.get("/events/counts", summary="Events per interval per device", response_model=Counts)
async def counts(
    operator: QueryOperator,
    handlers: Handlers,
    flt: Filter,
    interval_seconds: Annotated[int, Query(description="60 s to 31 days, aligned to the epoch")] = 3600,
    per_device: Annotated[
        bool, Query(description="false: fleet-wide counts per interval (device_id empty)")
    ] = True,
) -> Counts:
    rows = await handlers.queries.counts(flt, interval_seconds, per_device=per_device)
    return Counts(counts=[IntervalCount(start=c.start, device_id=c.device_id, count=c.count) for c in rows])


@router.get("/events/expressions", summary="Face events per expression", response_model=Expressions)
async def expressions(
    operator: QueryOperator,
    handlers: Handlers,
    flt: Filter,
    per_device: Annotated[bool, Query(description="Also count per device")] = False,
) -> Expressions:
    rows = await handlers.queries.expressions(flt, per_device=per_device)
    return Expressions(
        counts=[ExpressionCount(device_id=c.device_id, label=c.label, count=c.count) for c in rows]
    )


@router.get("/events/unknown-rate", summary="Share of face events that were unknown faces")
async def unknown_rate(operator: QueryOperator, handlers: Handlers, flt: Filter) -> UnknownRates:
    total, per_device = await handlers.queries.unknown_rate(flt)
    rows = [
        UnknownRate(
            device_id=r.device_id, face_events=r.face_events, unknown_events=r.unknown_events, rate=r.rate
        )
        for r in (total, *per_device)
    ]
    return UnknownRates(total=rows[0], per_device=rows[1:])


@router.get("/events/access", summary="Granted and denied access decisions per door", response_model=Access)
async def access(operator: QueryOperator, handlers: Handlers, flt: Filter) -> Access:
    doors = await handlers.queries.access(flt)
    return Access(
        doors=[
            DoorAccess(device_id=d.device_id, door=d.door, granted=d.granted, denied=d.denied) for d in doors
        ]
    )


@router.get(
    "/events/attributes",
    summary="Face events per estimated gender and age band",
    description="Counts only the face events of agents with `[attributes] enabled = true`, each under the "
    "gender and age band its agent reported; `face_events` counts them all. Person filters are refused.",
    response_model=AttributeDistribution,
)
async def attributes(
    operator: QueryOperator,
    handlers: Handlers,
    flt: Filter,
    per_device: Annotated[bool, Query(description="Also count per device")] = False,
) -> AttributeDistribution:
    total, rows = await handlers.queries.attributes(flt, per_device=per_device)
    return AttributeDistribution(
        total=AttributeCountsOut.of(total), per_device=[AttributeCountsOut.of(r) for r in rows]
    )


@router.get("/fleet", summary="Every registered agent: online, versions, revision lag, health")
async def fleet(
    operator: QueryOperator,
    handlers: Handlers,
    device_id: Annotated[list[str], Query(description="Only these devices (repeat the parameter)")] = [],  # noqa: B006
) -> Fleet:
    agents, head = await handlers.queries.fleet(tuple(device_id))
    return Fleet(
        agents=[AgentOut.of(a) for a in agents], gallery_revision=head, server_time=handlers.queries.clock()
    )
