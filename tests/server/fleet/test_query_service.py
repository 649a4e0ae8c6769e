"""QueryService end to end: what agents reported is what dashboards get back."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import events_pb2, fleet_pb2, query_pb2
from tests.server.conftest import Harness, Pki, run, serving

T0 = (datetime.now(timezone.utc) - timedelta(days=30)).replace(hour=9, minute=0, second=0, microsecond=0)
"""A morning a month ago: reported events must be within the server's window of accepted times."""


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def face(
    device: str,
    minute: int,
    decision: int,
    person: str = "",
    label: str = "neutral",
    camera: str = "cam",
    attributes: tuple[str, float, float, str] | None = None,
) -> events_pb2.Event:
    """A face event; attributes: (gender, male probability, age in years, age band) as an agent estimates."""
    estimate = None
    if attributes is not None:
        gender, male, years, band = attributes
        estimate = events_pb2.FaceAttributes(
            gender=gender, male_probability=male, age_years=years, age_band=band
        )
    return events_pb2.Event(
        event_id=str(uuid.uuid4()),
        device_id=device,
        time=stamp(T0 + timedelta(minutes=minute)),
        camera=camera,
        kind=events_pb2.EVENT_KIND_FACE,
        decision=decision,
        person_id=person,
        score=0.7,
        margin=0.2,
        quality=0.8,
        expression=events_pb2.Expression(label=label, probabilities={label: 1.0}),
        model_versions={"embedding": "sface@2021dec"},
        gallery_revision=3,
        attributes=estimate,
    )


def access(device: str, minute: int, decision: int, door: str, person: str = "alice") -> events_pb2.Event:
    return events_pb2.Event(
        event_id=str(uuid.uuid4()),
        device_id=device,
        time=stamp(T0 + timedelta(minutes=minute)),
        kind=events_pb2.EVENT_KIND_ACCESS,
        decision=decision,
        person_id=person,
        door=door,
        reason="in group staff" if decision == events_pb2.DECISION_GRANTED else "not in group staff",
    )


MATCH, UNKNOWN = events_pb2.DECISION_MATCH, events_pb2.DECISION_UNKNOWN
GRANTED, DENIED = events_pb2.DECISION_GRANTED, events_pb2.DECISION_DENIED
REPORTS = {
    "door-1": [
        face("door-1", 0, MATCH, "alice", "happy", attributes=("female", 0.1, 31.4, "30-39")),
        face("door-1", 5, UNKNOWN, "", "sad", attributes=("male", 0.93, 24.0, "20-29")),
        face("door-1", 70, MATCH, "bob", "happy"),
        access("door-1", 0, GRANTED, "main"),
        access("door-1", 71, DENIED, "main", "bob"),
    ],
    "door-2": [
        face("door-2", 10, UNKNOWN, "", "neutral", attributes=("female", 0.5, 12.5, "0-12")),
        face("door-2", 20, UNKNOWN, "", "happy", camera="porch", attributes=("male", 0.7, 66.0, "60+")),
        face("door-2", 130, MATCH, "alice", "happy"),
        access("door-2", 131, GRANTED, "side"),
    ],
}


def window(**fields: Any) -> query_pb2.EventFilter:
    """The three hours of REPORTS (fields may narrow them, or set start and end)."""
    return query_pb2.EventFilter(**{"start": stamp(T0), "end": stamp(T0 + timedelta(hours=3)), **fields})


async def reported(harness: Harness) -> query_pb2.QueryServiceStub:
    for device, events in REPORTS.items():
        fleet = await harness.registered(device)
        reply = await fleet.ReportResults(fleet_pb2.ReportResultsRequest(device_id=device, events=events))
        assert reply.stored == len(events)
    return harness.query()


def test_events_come_back_newest_first_with_filters_and_paging(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            query, md = await reported(harness), harness.query_md
            pages = [
                await query.ListEvents(query_pb2.ListEventsRequest(filter=window(), page_size=4), metadata=md)
            ]
            while pages[-1].next_page_token:
                request = query_pb2.ListEventsRequest(
                    filter=window(), page_size=4, page_token=pages[-1].next_page_token
                )
                pages.append(await query.ListEvents(request, metadata=md))
            alice = await query.ListEvents(
                query_pb2.ListEventsRequest(filter=window(person_ids=["alice"])), metadata=md
            )
            unknown_door2 = await query.ListEvents(
                query_pb2.ListEventsRequest(filter=window(device_ids=["door-2"], decisions=[UNKNOWN])),
                metadata=md,
            )
            by_camera = {
                cameras: await query.ListEvents(
                    query_pb2.ListEventsRequest(filter=window(cameras=cameras)), metadata=md
                )
                for cameras in (("porch",), ("cam",), ("porch", "cam"), ("side",))
            }
            by_door = {
                doors: await query.ListEvents(
                    query_pb2.ListEventsRequest(filter=window(doors=doors)), metadata=md
                )
                for doors in (("main",), ("side",), ("main", "side"), ("porch",))
            }
            return {"pages": pages, "alice": alice, "unknown_door2": unknown_door2, "by_camera": by_camera,
                    "by_door": by_door}  # fmt: skip

    result = run(scenario)
    listed = [e for page in result["pages"] for e in page.events]
    everything = [e for events in REPORTS.values() for e in events]
    assert len(result["pages"]) == 3
    assert sorted(e.event_id for e in listed) == sorted(e.event_id for e in everything)
    times = [e.time.ToDatetime() for e in listed]
    assert times == sorted(times, reverse=True)
    assert {e.event_id: e for e in everything}[listed[0].event_id] == listed[0]  # every field round-trips
    reported_attributes = {e.event_id: e.attributes for e in everything if e.HasField("attributes")}
    assert {e.event_id: e.attributes for e in listed if e.HasField("attributes")} == reported_attributes
    assert len(reported_attributes) == 4
    assert {(e.kind, e.device_id) for e in result["alice"].events} == {
        (events_pb2.EVENT_KIND_FACE, "door-1"),
        (events_pb2.EVENT_KIND_ACCESS, "door-1"),
        (events_pb2.EVENT_KIND_FACE, "door-2"),
        (events_pb2.EVENT_KIND_ACCESS, "door-2"),
    }
    assert len(result["unknown_door2"].events) == 2

    def ids(reply: query_pb2.ListEventsResponse) -> list[str]:
        return sorted(e.event_id for e in reply.events)

    def reported_where(wanted: Any) -> list[str]:
        return sorted(e.event_id for e in everything if wanted(e))

    for cameras, reply in result["by_camera"].items():
        assert ids(reply) == reported_where(lambda e, c=cameras: e.camera in c), cameras
    for doors, reply in result["by_door"].items():
        assert ids(reply) == reported_where(lambda e, d=doors: e.door in d), doors
    assert [len(r.events) for r in result["by_camera"].values()] == [1, 5, 6, 0]
    assert [len(r.events) for r in result["by_door"].values()] == [2, 1, 3, 0]


def test_aggregates_count_what_was_reported(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            query, md = await reported(harness), harness.query_md
            return {
                "hourly": await query.CountEvents(
                    query_pb2.CountEventsRequest(filter=window(), interval_seconds=3600), metadata=md
                ),
                "faces_15m": await query.CountEvents(
                    query_pb2.CountEventsRequest(
                        filter=window(kinds=[events_pb2.EVENT_KIND_FACE], device_ids=["door-2"]),
                        interval_seconds=900,
                    ),
                    metadata=md,
                ),
                "expressions": await query.ExpressionDistribution(
                    query_pb2.ExpressionDistributionRequest(filter=window(), per_device=True), metadata=md
                ),
                "unknown": await query.UnknownFaceRate(
                    query_pb2.UnknownFaceRateRequest(filter=window()), metadata=md
                ),
                "access": await query.AccessSummary(
                    query_pb2.AccessSummaryRequest(filter=window()), metadata=md
                ),
                "main_hourly": await query.CountEvents(
                    query_pb2.CountEventsRequest(filter=window(doors=["main"]), interval_seconds=3600),
                    metadata=md,
                ),
                "side_access": await query.AccessSummary(
                    query_pb2.AccessSummaryRequest(filter=window(doors=["side"])), metadata=md
                ),
                "porch_hourly": await query.CountEvents(
                    query_pb2.CountEventsRequest(filter=window(cameras=["porch"]), interval_seconds=3600),
                    metadata=md,
                ),
                "porch_unknown": await query.UnknownFaceRate(
                    query_pb2.UnknownFaceRateRequest(filter=window(cameras=["porch"])), metadata=md
                ),
                "cam_expressions": await query.ExpressionDistribution(
                    query_pb2.ExpressionDistributionRequest(filter=window(cameras=["cam"])), metadata=md
                ),
            }

    r = run(scenario)
    hourly = {(c.start.ToDatetime().hour, c.device_id): c.count for c in r["hourly"].counts}
    assert hourly == {(9, "door-1"): 3, (10, "door-1"): 2, (9, "door-2"): 2, (11, "door-2"): 2}
    assert [(c.start.ToDatetime().minute, c.count) for c in r["faces_15m"].counts] == [
        (0, 1),
        (15, 1),
        (0, 1),
    ]
    fleet_wide = {c.label: c.count for c in r["expressions"].counts if not c.device_id}
    assert fleet_wide == {"happy": 4, "neutral": 1, "sad": 1}
    per_device = {(c.device_id, c.label): c.count for c in r["expressions"].counts if c.device_id}
    assert per_device == {
        ("door-1", "happy"): 2,
        ("door-1", "sad"): 1,
        ("door-2", "happy"): 2,
        ("door-2", "neutral"): 1,
    }
    unknown = r["unknown"]
    assert (unknown.total.face_events, unknown.total.unknown_events) == (6, 3)
    assert unknown.total.rate == pytest.approx(0.5)
    assert {(d.device_id, d.unknown_events, d.face_events) for d in unknown.per_device} == {
        ("door-1", 1, 3),
        ("door-2", 2, 3),
    }
    assert [(d.device_id, d.door, d.granted, d.denied) for d in r["access"].doors] == [
        ("door-1", "main", 1, 1),
        ("door-2", "side", 1, 0),
    ]
    # a door filter (served by the rollups) and a camera filter (by the raw events) count what was reported
    main = [(c.start.ToDatetime().hour, c.device_id, c.count) for c in r["main_hourly"].counts]
    assert main == [(9, "door-1", 1), (10, "door-1", 1)]
    assert [(d.device_id, d.door, d.granted, d.denied) for d in r["side_access"].doors] == [
        ("door-2", "side", 1, 0)
    ]
    porch = [(c.start.ToDatetime().hour, c.device_id, c.count) for c in r["porch_hourly"].counts]
    assert porch == [(9, "door-2", 1)]
    total = r["porch_unknown"].total
    assert (total.face_events, total.unknown_events) == (1, 1)
    assert {c.label: c.count for c in r["cam_expressions"].counts} == {"happy": 3, "sad": 1, "neutral": 1}


def attribute_rows(reply: query_pb2.AttributeDistributionResponse) -> dict[str, Any]:
    """device ('' the total) → (face events, estimated, genders, age bands, {(gender, band): count})."""
    return {
        row.device_id: (
            row.face_events,
            row.estimated,
            [(c.label, c.count) for c in row.genders],
            [(c.label, c.count) for c in row.age_bands],
            {(c.gender, c.age_band): c.count for c in row.gender_age_bands},
        )
        for row in (reply.total, *reply.per_device)
    }


def bands(**counts: int) -> list[tuple[str, int]]:
    """Every age band in order with its count (keyword b0_12 for "0-12", b60 for "60+")."""
    names = {"b0_12": "0-12", "b13_19": "13-19", "b20_29": "20-29", "b30_39": "30-39", "b40_49": "40-49",
             "b50_59": "50-59", "b60": "60+"}  # fmt: skip
    return [(band, counts.get(key, 0)) for key, band in names.items()]


def test_the_attribute_distribution_counts_what_agents_estimated(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            query, md = await reported(harness), harness.query_md

            async def distribution(per_device: bool = True, **fields: Any) -> Any:
                request = query_pb2.AttributeDistributionRequest(
                    filter=window(**fields), per_device=per_device
                )
                return await query.AttributeDistribution(request, metadata=md)

            results: dict[str, Any] = {
                "all": await distribution(),
                "fleet_only": await distribution(per_device=False),
                "porch": await distribution(cameras=["porch"]),
                "unknown": await distribution(decisions=[UNKNOWN]),
                "door_2": await distribution(device_ids=["door-2"], kinds=[events_pb2.EVENT_KIND_ACCESS]),
                "main_door": await distribution(doors=["main"]),
                "later": await distribution(
                    per_device=False,
                    start=stamp(T0 + timedelta(minutes=5)),
                    end=stamp(T0 + timedelta(minutes=20)),
                ),
            }
            for name, call in (
                ("person", distribution(person_ids=["alice"])),
                (
                    "no_token",
                    query.AttributeDistribution(query_pb2.AttributeDistributionRequest(filter=window())),
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                results[name] = (refused.value.code(), refused.value.details())
            return results

    r = run(scenario)
    door_1 = (3, 2, [("female", 1), ("male", 1)], bands(b20_29=1, b30_39=1),
              {("female", "30-39"): 1, ("male", "20-29"): 1})  # fmt: skip
    door_2 = (
        3,
        2,
        [("female", 1), ("male", 1)],
        bands(b0_12=1, b60=1),
        {("female", "0-12"): 1, ("male", "60+"): 1},
    )
    everyone = (6, 4, [("female", 2), ("male", 2)], bands(b0_12=1, b20_29=1, b30_39=1, b60=1),
                {**door_1[4], **door_2[4]})  # fmt: skip
    assert attribute_rows(r["all"]) == {"": everyone, "door-1": door_1, "door-2": door_2}
    assert [row.device_id for row in r["all"].per_device] == ["door-1", "door-2"]
    assert [(c.gender, c.age_band) for c in r["all"].total.gender_age_bands] == [
        ("female", "0-12"),
        ("female", "30-39"),
        ("male", "20-29"),
        ("male", "60+"),
    ]
    assert attribute_rows(r["fleet_only"]) == {"": everyone}
    porch = (1, 1, [("female", 0), ("male", 1)], bands(b60=1), {("male", "60+"): 1})
    assert attribute_rows(r["porch"]) == {"": porch, "door-2": porch}  # a camera filter reads the raw events
    unknown_1 = (1, 1, [("female", 0), ("male", 1)], bands(b20_29=1), {("male", "20-29"): 1})
    assert attribute_rows(r["unknown"]) == {
        "": (3, 3, [("female", 1), ("male", 2)], bands(b0_12=1, b20_29=1, b60=1),
             {("female", "0-12"): 1, ("male", "20-29"): 1, ("male", "60+"): 1}),
        "door-1": unknown_1,
        "door-2": (2, *door_2[1:]),  # its match was not estimated
    }  # fmt: skip
    assert attribute_rows(r["door_2"]) == {"": door_2, "door-2": door_2}  # face events whatever the kinds
    assert attribute_rows(r["main_door"]) == {"": (0, 0, [("female", 0), ("male", 0)], bands(), {})}
    assert attribute_rows(r["later"]) == {
        "": (2, 2, [("female", 1), ("male", 1)], bands(b0_12=1, b20_29=1), {("female", "0-12"): 1,
                                                                             ("male", "20-29"): 1})
    }  # fmt: skip
    assert r["person"] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "AttributeDistribution cannot filter by person_ids; use ListEvents",
    )
    assert r["no_token"][0] == grpc.StatusCode.UNAUTHENTICATED


def test_bad_queries_fail_with_invalid_argument(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with serving(tmp_path, pki, enroller) as harness:
            query, md = harness.query(), harness.query_md
            calls = [
                query.ListEvents(query_pb2.ListEventsRequest(), metadata=md),
                query.ListEvents(
                    query_pb2.ListEventsRequest(filter=window(), page_token="garbage!"), metadata=md
                ),
                query.ListEvents(query_pb2.ListEventsRequest(filter=window(), page_size=5000), metadata=md),
                query.CountEvents(
                    query_pb2.CountEventsRequest(filter=window(), interval_seconds=1), metadata=md
                ),
                query.CountEvents(
                    query_pb2.CountEventsRequest(filter=window(person_ids=["alice"]), interval_seconds=60),
                    metadata=md,
                ),
                query.ListEvents(
                    query_pb2.ListEventsRequest(
                        filter=query_pb2.EventFilter(start=stamp(T0), end=stamp(T0 - timedelta(hours=1)))
                    ),
                    metadata=md,
                ),
                query.ListEvents(
                    query_pb2.ListEventsRequest(filter=window(cameras=["lobby\t2"])), metadata=md
                ),
                query.AccessSummary(
                    query_pb2.AccessSummaryRequest(filter=window(doors=[f"door-{i}" for i in range(101)])),
                    metadata=md,
                ),
                query.CountEvents(  # minutes of 400 days: 576,000 points per device
                    query_pb2.CountEventsRequest(
                        filter=window(end=stamp(T0 + timedelta(days=400))), interval_seconds=60
                    ),
                    metadata=md,
                ),
            ]
            results = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                results.append((info.value.code(), info.value.details() or ""))
            return results

    results = run(scenario)
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT for code, _ in results)
    details = [d for _, d in results]
    assert "filter start is missing" in details[0]
    assert "page_token is not one this server issued" in details[1]
    assert "page_size must be 1–1000" in details[2]
    assert "interval_seconds must be 60" in details[3]
    assert "CountEvents cannot filter by person_ids" in details[4]
    assert "must be after start" in details[5]
    assert "filter cameras: 'lobby\\t2' is not a camera name" in details[6]
    assert "filter doors: at most 100 values" in details[7]
    assert "576,000 intervals of 60 s in the filter's range; the limit is 10,000" in details[8]
