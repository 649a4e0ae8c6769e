"""QueryService messages: the event filter, event pages, the aggregates (the attribute distribution among
them) and the fleet status."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.link.serde import (
    DECISION_VALUES,
    DECISIONS,
    KIND_VALUES,
    KINDS,
    event_to_proto,
    from_timestamp,
    status_to_proto,
    timestamp,
)
from facefleet.server.api.wire.devices import status_to_proto as device_status_to_proto
from facefleet.server.domain.queries import (
    AgentStatus,
    AttributeCounts,
    DoorAccess,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.v1 import (
    query_pb2,
)


def filter_from_proto(message: query_pb2.EventFilter) -> EventFilter:
    for name, values, known in (("decisions", message.decisions, DECISIONS), ("kinds", message.kinds, KINDS)):
        if any(v not in known for v in values):
            raise InvalidArgumentError(f"filter {name} holds an unspecified or unknown value")
    return EventFilter(
        start=from_timestamp(message.start, "filter start"),
        end=from_timestamp(message.end, "filter end"),
        device_ids=tuple(message.device_ids),
        person_ids=tuple(message.person_ids),
        decisions=tuple(DECISIONS[d] for d in message.decisions),
        kinds=tuple(KINDS[k] for k in message.kinds),
        cameras=tuple(message.cameras),
        doors=tuple(message.doors),
    )


def filter_to_proto(flt: EventFilter) -> query_pb2.EventFilter:
    return query_pb2.EventFilter(
        start=timestamp(flt.start),
        end=timestamp(flt.end),
        device_ids=flt.device_ids,
        person_ids=flt.person_ids,
        decisions=[DECISION_VALUES[d] for d in flt.decisions],
        kinds=[KIND_VALUES[k] for k in flt.kinds],
        cameras=flt.cameras,
        doors=flt.doors,
    )


def events_response(page: EventPage) -> query_pb2.ListEventsResponse:
    return query_pb2.ListEventsResponse(
        events=[event_to_proto(e) for e in page.events],
        next_page_token=page.next_cursor.encode() if page.next_cursor else "",
    )


def counts_response(counts: Iterable[IntervalCount]) -> query_pb2.CountEventsResponse:
    stamps: dict[datetime, Timestamp] = {}  # many devices share each interval's start
    rows = []
    for c in counts:
        if c.start not in stamps:
            stamps[c.start] = timestamp(c.start)
        rows.append(query_pb2.IntervalCount(start=stamps[c.start], device_id=c.device_id, count=c.count))
    return query_pb2.CountEventsResponse(counts=rows)


def expressions_response(counts: Iterable[ExpressionCount]) -> query_pb2.ExpressionDistributionResponse:
    return query_pb2.ExpressionDistributionResponse(
        counts=[
            query_pb2.ExpressionCount(device_id=c.device_id, label=c.label, count=c.count) for c in counts
        ]
    )


def unknown_rate_response(
    total: UnknownRate, per_device: Iterable[UnknownRate]
) -> query_pb2.UnknownFaceRateResponse:
    def one(rate: UnknownRate) -> query_pb2.UnknownFaceRate:
        return query_pb2.UnknownFaceRate(
            device_id=rate.device_id,
            face_events=rate.face_events,
            unknown_events=rate.unknown_events,
            rate=rate.rate,
        )

    return query_pb2.UnknownFaceRateResponse(total=one(total), per_device=[one(r) for r in per_device])


def access_response(doors: Iterable[DoorAccess]) -> query_pb2.AccessSummaryResponse:
    return query_pb2.AccessSummaryResponse(
        doors=[
            query_pb2.DoorAccess(device_id=d.device_id, door=d.door, granted=d.granted, denied=d.denied)
            for d in doors
        ]
    )


def attributes_response(
    total: AttributeCounts, per_device: Iterable[AttributeCounts]
) -> query_pb2.AttributeDistributionResponse:
    return query_pb2.AttributeDistributionResponse(
        total=attribute_counts_to_proto(total), per_device=[attribute_counts_to_proto(r) for r in per_device]
    )


def attribute_counts_to_proto(counts: AttributeCounts) -> query_pb2.AttributeCounts:
    return query_pb2.AttributeCounts(
        device_id=counts.device_id,
        face_events=counts.face_events,
        estimated=counts.estimated,
        genders=[query_pb2.LabelCount(label=g, count=n) for g, n in counts.genders.items()],
        age_bands=[query_pb2.LabelCount(label=b, count=n) for b, n in counts.age_bands.items()],
        gender_age_bands=[
            query_pb2.AttributeCount(gender=c.gender, age_band=c.age_band, count=c.count)
            for c in counts.counts
        ],
    )


def fleet_response(
    agents: Iterable[AgentStatus], revision: int, now: datetime
) -> query_pb2.FleetStatusResponse:
    return query_pb2.FleetStatusResponse(
        agents=[agent_status_to_proto(a) for a in agents],
        gallery_revision=revision,
        server_time=timestamp(now),
    )


def agent_status_to_proto(a: AgentStatus) -> query_pb2.AgentStatus:
    message = query_pb2.AgentStatus(
        device_id=a.device_id,
        online=a.online,
        watching=a.watching,
        last_seen=timestamp(a.last_seen),
        registered_at=timestamp(a.registered_at),
        agent_version=a.agent_version,
        hostname=a.hostname,
        model_versions=dict(a.model_versions),
        model_precisions=dict(a.model_precisions),
        capabilities=a.capabilities,
        gallery_revision=a.gallery_revision,
        revision_lag=a.revision_lag,
        health=dict(a.health),
        model_statuses=[status_to_proto(s) for s in a.model_statuses],
        groups=a.groups,
        device_status=device_status_to_proto(a.device_status),
    )
    if a.certificate_expires_at is not None:
        message.certificate_expires.CopyFrom(timestamp(a.certificate_expires_at))
    return message
