"""Conversions between the generated facefleet.v1 messages of people, gallery deltas, events, the fleet link
and dashboard queries and the domain dataclasses (`*_from_proto` validate and raise InvalidArgumentError
naming the field), plus the generated service base classes and registration functions the servicers and the
app need. The model-version messages are converted in wire_models; no other server module imports
generated code."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from facefleet.link.checks import MAX_EMBEDDINGS_PER_PERSON, check_id
from facefleet.link.errors import LinkError
from facefleet.link.events import Event
from facefleet.link.gallery import Person
from facefleet.link.serde import (
    DECISION_VALUES,
    DECISIONS,
    KIND_VALUES,
    KINDS,
    embedding_from_proto,
    event_from_proto,
    event_to_proto,
    from_timestamp,
    person_to_proto,
    timestamp,
)
from facefleet.server.domain.queries import (
    DoorAccess,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
)
from facefleet.server.domain.records import EnrolmentRequest, EnrolmentResult, OnExisting, PersonUpdate
from facefleet.server.errors import InvalidArgumentError

# mypy does not see the editable install's protos/ root; the generated .pyi stubs would need
# `mypy_path = "protos"` in pyproject.toml, and the *_pb2_grpc.py modules carry no annotations.
from facefleet.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    fleet_pb2,
    fleet_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

FleetServicerBase = fleet_pb2_grpc.FleetServiceServicer
AdminServicerBase = admin_pb2_grpc.AdminServiceServicer
QueryServicerBase = query_pb2_grpc.QueryServiceServicer


def add_fleet_servicer(servicer: FleetServicerBase, server: grpc.aio.Server) -> None:
    fleet_pb2_grpc.add_FleetServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def add_admin_servicer(servicer: AdminServicerBase, server: grpc.aio.Server) -> None:
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


def add_query_servicer(servicer: QueryServicerBase, server: grpc.aio.Server) -> None:
    query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (fleet_pb2, "FleetService"),
        (admin_pb2, "AdminService"),
        (query_pb2, "QueryService"),
    )
)

ON_EXISTING: dict[int, OnExisting] = {
    admin_pb2.ON_EXISTING_FAIL: "fail",
    admin_pb2.ON_EXISTING_REPLACE: "replace",
    admin_pb2.ON_EXISTING_APPEND: "append",
}


# -- time --------------------------------------------------------------------------------------------


# -- gallery -----------------------------------------------------------------------------------------


# -- events ------------------------------------------------------------------------------------------


def report_from_proto(
    request: fleet_pb2.ReportResultsRequest, device_id: str
) -> tuple[list[Event], list[tuple[str, str]], dict[str, float]]:
    """(valid events, rejections (event_id, reason) of the others, health figures). An event without a
    device_id is the reporting device's."""
    events: list[Event] = []
    rejected: list[tuple[str, str]] = []
    for index, message in enumerate(request.events):
        try:
            events.append(event_from_proto(message, default_device=device_id))
        except LinkError as exc:
            rejected.append((message.event_id or f"#{index}", str(exc)))
    return events, rejected, dict(request.health)


# -- fleet -------------------------------------------------------------------------------------------


def ack_response(revision: int) -> fleet_pb2.AckGalleryResponse:
    return fleet_pb2.AckGalleryResponse(gallery_revision=revision)


# -- admin -------------------------------------------------------------------------------------------


def enrolment_from_proto(request: admin_pb2.EnrollPersonRequest) -> EnrolmentRequest:
    if len(request.embeddings) > MAX_EMBEDDINGS_PER_PERSON:
        raise InvalidArgumentError(
            f"{len(request.embeddings)} embeddings; the limit is {MAX_EMBEDDINGS_PER_PERSON}"
        )
    if request.on_existing not in ON_EXISTING:
        raise InvalidArgumentError(f"on_existing {request.on_existing} is not a known OnExisting value")
    return EnrolmentRequest(
        person_id=request.person_id,
        display_name=request.display_name,
        groups=tuple(request.groups),
        metadata_json=request.metadata_json,
        images=tuple(request.images),
        embeddings=tuple(
            embedding_from_proto(e, f"embeddings[{i}]") for i, e in enumerate(request.embeddings)
        ),
        on_existing=ON_EXISTING[request.on_existing],
    )


def enrolment_response(result: EnrolmentResult) -> admin_pb2.EnrollPersonResponse:
    return admin_pb2.EnrollPersonResponse(
        person=person_to_proto(result.person, with_vectors=False),
        faces=[
            admin_pb2.EnrolledFace(
                image_index=f.image_index, box_xyxy=f.box_xyxy, quality=f.quality, model_ids=f.model_ids
            )
            for f in result.faces
        ],
        revision=result.person.revision,
    )


def person_id_from_proto(request: admin_pb2.DeletePersonRequest | admin_pb2.GetPersonRequest) -> str:
    return check_id("person_id", request.person_id)


def update_from_proto(request: admin_pb2.UpdatePersonRequest) -> PersonUpdate:
    return PersonUpdate(
        person_id=request.person_id,
        display_name=request.display_name if request.HasField("display_name") else None,
        groups=tuple(request.groups.groups) if request.HasField("groups") else None,
        metadata_json=request.metadata_json if request.HasField("metadata_json") else None,
    )


def update_response(person: Person) -> admin_pb2.UpdatePersonResponse:
    return admin_pb2.UpdatePersonResponse(
        person=person_to_proto(person, with_vectors=False), revision=person.revision
    )


def delete_response(revision: int) -> admin_pb2.DeletePersonResponse:
    return admin_pb2.DeletePersonResponse(revision=revision)


def get_person_response(person: Person, crops: int, *, with_vectors: bool) -> admin_pb2.GetPersonResponse:
    return admin_pb2.GetPersonResponse(
        person=person_to_proto(person, with_vectors=with_vectors), stored_crops=crops
    )


def people_response(people: Iterable[Person], next_token: str, revision: int) -> admin_pb2.ListPeopleResponse:
    return admin_pb2.ListPeopleResponse(
        people=[person_to_proto(p, with_vectors=False) for p in people],
        next_page_token=next_token,
        gallery_revision=revision,
    )


# -- queries -----------------------------------------------------------------------------------------


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
    )


def filter_to_proto(flt: EventFilter) -> query_pb2.EventFilter:
    return query_pb2.EventFilter(
        start=timestamp(flt.start),
        end=timestamp(flt.end),
        device_ids=flt.device_ids,
        person_ids=flt.person_ids,
        decisions=[DECISION_VALUES[d] for d in flt.decisions],
        kinds=[KIND_VALUES[k] for k in flt.kinds],
    )


def events_response(page: EventPage) -> query_pb2.ListEventsResponse:
    return query_pb2.ListEventsResponse(
        events=[event_to_proto(e) for e in page.events],
        next_page_token=page.next_cursor.encode() if page.next_cursor else "",
    )


def counts_response(counts: Iterable[IntervalCount]) -> query_pb2.CountEventsResponse:
    return query_pb2.CountEventsResponse(
        counts=[
            query_pb2.IntervalCount(start=timestamp(c.start), device_id=c.device_id, count=c.count)
            for c in counts
        ]
    )


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
