"""/api/events and /api/fleet over HTTPS: what agents reported through FleetService is what a dashboard with a
query token gets back, as events a page at a time, aggregates and the fleet status."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from facefleet.server.gallery.embedder import Enroller
from facefleet.server.state.sql import events as sql_events
from facefleet.v1 import query_pb2
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.fleet.test_query_service import REPORTS, T0, reported, window
from tests.server.http.clients import client, problem

WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=3)).isoformat()}


def test_events_and_aggregates_answer_what_agents_reported(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            await reported(harness)
            async with client(harness, harness.query_token) as http:
                pages = [(await http.get("/api/events", params={**WINDOW, "page_size": 4})).json()]
                while pages[-1]["next_page_token"]:
                    params = {**WINDOW, "page_size": 4, "page_token": pages[-1]["next_page_token"]}
                    pages.append((await http.get("/api/events", params=params)).json())
                filtered = await http.get(
                    "/api/events", params={**WINDOW, "device_id": "door-2", "decision": "unknown"}
                )
                alice = await http.get("/api/events", params={**WINDOW, "person_id": "alice"})
                porch = await http.get("/api/events", params={**WINDOW, "camera": "porch"})
                doors = await http.get(
                    "/api/events", params=[*WINDOW.items(), ("door", "main"), ("door", "side")]
                )
                return {
                    "porch": porch.json()["events"],
                    "doors": doors.json()["events"],
                    "main_hourly": (
                        await http.get(
                            "/api/events/counts", params={**WINDOW, "door": "main", "interval_seconds": 3600}
                        )
                    ).json()["counts"],
                    "side_access": (
                        await http.get("/api/events/access", params={**WINDOW, "door": "side"})
                    ).json(),
                    "cam_unknown": (
                        await http.get("/api/events/unknown-rate", params={**WINDOW, "camera": "cam"})
                    ).json(),
                    "pages": pages,
                    "filtered": filtered.json()["events"],
                    "alice": alice.json()["events"],
                    "recent": (await http.get("/api/events")).json()["events"],
                    "hourly": await http.get(
                        "/api/events/counts", params={**WINDOW, "interval_seconds": 3600}
                    ),
                    "fleet_hourly": (
                        await http.get(
                            "/api/events/counts",
                            params={**WINDOW, "interval_seconds": 3600, "per_device": "false"},
                        )
                    ).json()["counts"],
                    "expressions": await http.get(
                        "/api/events/expressions", params={**WINDOW, "per_device": "true"}
                    ),
                    "unknown": await http.get("/api/events/unknown-rate", params=WINDOW),
                    "access": await http.get("/api/events/access", params=WINDOW),
                    "attributes": await http.get(
                        "/api/events/attributes", params={**WINDOW, "per_device": "true"}
                    ),
                    "porch_attributes": (
                        await http.get(
                            "/api/events/attributes",
                            params=[*WINDOW.items(), ("camera", "porch"), ("decision", "unknown")],
                        )
                    ).json(),
                    "fleet": (await http.get("/api/fleet")).json(),
                    "one": (await http.get("/api/fleet", params={"device_id": "door-2"})).json(),
                }

    r = run(scenario)
    listed = [e for page in r["pages"] for e in page["events"]]
    everything = [e for events in REPORTS.values() for e in events]
    assert len(r["pages"]) == 3
    assert sorted(e["event_id"] for e in listed) == sorted(e.event_id for e in everything)
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in listed]
    assert times == sorted(times, reverse=True)
    first = next(e for e in listed if e["decision"] == "match" and e["kind"] == "face")
    assert first["expression"]["label"] == "happy" and first["model_versions"] == {
        "embedding": "sface@2021dec"
    }
    assert (first["score"], first["quality"], first["gallery_revision"]) == (
        pytest.approx(0.7),
        pytest.approx(0.8),
        3,
    )
    assert len(r["filtered"]) == 2 and {e["device_id"] for e in r["filtered"]} == {"door-2"}
    assert {(e["kind"], e["device_id"]) for e in r["alice"]} == {
        ("face", "door-1"),
        ("access", "door-1"),
        ("face", "door-2"),
        ("access", "door-2"),
    }
    assert [(e["device_id"], e["camera"], e["decision"]) for e in r["porch"]] == [
        ("door-2", "porch", "unknown")
    ]
    assert sorted(e["event_id"] for e in r["doors"]) == sorted(e.event_id for e in everything if e.door)
    assert [(e["door"], e["decision"]) for e in r["doors"]] == [
        ("side", "granted"),
        ("main", "denied"),
        ("main", "granted"),
    ]
    assert [
        (datetime.fromisoformat(c["start"]).hour, c["device_id"], c["count"]) for c in r["main_hourly"]
    ] == [
        (9, "door-1", 1),
        (10, "door-1", 1),
    ]
    assert r["side_access"]["doors"] == [{"device_id": "door-2", "door": "side", "granted": 1, "denied": 0}]
    assert (r["cam_unknown"]["total"]["face_events"], r["cam_unknown"]["total"]["unknown_events"]) == (5, 2)
    assert r["recent"] == []  # the default window is the last 24 hours; the reports are a month old

    hourly = {
        (datetime.fromisoformat(c["start"]).hour, c["device_id"]): c["count"]
        for c in r["hourly"].json()["counts"]
    }
    assert hourly == {(9, "door-1"): 3, (10, "door-1"): 2, (9, "door-2"): 2, (11, "door-2"): 2}
    fleet_hourly = {
        (datetime.fromisoformat(c["start"]).hour, c["device_id"]): c["count"] for c in r["fleet_hourly"]
    }
    assert fleet_hourly == {(9, ""): 5, (10, ""): 2, (11, ""): 2}
    counts = r["expressions"].json()["counts"]
    assert {c["label"]: c["count"] for c in counts if not c["device_id"]} == {
        "happy": 4,
        "neutral": 1,
        "sad": 1,
    }
    assert {(c["device_id"], c["label"]): c["count"] for c in counts if c["device_id"]} == {
        ("door-1", "happy"): 2,
        ("door-1", "sad"): 1,
        ("door-2", "happy"): 2,
        ("door-2", "neutral"): 1,
    }
    unknown = r["unknown"].json()
    assert (unknown["total"]["face_events"], unknown["total"]["unknown_events"]) == (6, 3)
    assert unknown["total"]["rate"] == pytest.approx(0.5)
    assert {(d["device_id"], d["unknown_events"]) for d in unknown["per_device"]} == {
        ("door-1", 1),
        ("door-2", 2),
    }
    assert r["access"].json()["doors"] == [
        {"device_id": "door-1", "door": "main", "granted": 1, "denied": 1},
        {"device_id": "door-2", "door": "side", "granted": 1, "denied": 0},
    ]

    by_id = {e["event_id"]: e for e in listed}
    for sent in everything:
        if sent.HasField("attributes"):
            a = sent.attributes
            assert by_id[sent.event_id]["attributes"] == {
                "gender": a.gender,
                "male_probability": pytest.approx(a.male_probability),
                "age_years": pytest.approx(a.age_years),
                "age_band": a.age_band,
            }
        else:
            assert by_id[sent.event_id]["attributes"] is None
    assert by_id[REPORTS["door-2"][0].event_id]["attributes"] == {
        "gender": "female",
        "male_probability": 0.5,
        "age_years": 12.5,
        "age_band": "0-12",
    }
    no_bands = dict.fromkeys(("0-12", "13-19", "20-29", "30-39", "40-49", "50-59", "60+"), 0)
    attributes = r["attributes"]
    assert attributes.status_code == 200
    assert attributes.json() == {
        "total": {
            "device_id": "",
            "face_events": 6,
            "estimated": 4,
            "genders": {"female": 2, "male": 2},
            "age_bands": {**no_bands, "0-12": 1, "20-29": 1, "30-39": 1, "60+": 1},
            "gender_age_bands": [
                {"gender": "female", "age_band": "0-12", "count": 1},
                {"gender": "female", "age_band": "30-39", "count": 1},
                {"gender": "male", "age_band": "20-29", "count": 1},
                {"gender": "male", "age_band": "60+", "count": 1},
            ],
        },
        "per_device": [
            {
                "device_id": "door-1",
                "face_events": 3,
                "estimated": 2,
                "genders": {"female": 1, "male": 1},
                "age_bands": {**no_bands, "20-29": 1, "30-39": 1},
                "gender_age_bands": [
                    {"gender": "female", "age_band": "30-39", "count": 1},
                    {"gender": "male", "age_band": "20-29", "count": 1},
                ],
            },
            {
                "device_id": "door-2",
                "face_events": 3,
                "estimated": 2,
                "genders": {"female": 1, "male": 1},
                "age_bands": {**no_bands, "0-12": 1, "60+": 1},
                "gender_age_bands": [
                    {"gender": "female", "age_band": "0-12", "count": 1},
                    {"gender": "male", "age_band": "60+", "count": 1},
                ],
            },
        ],
    }
    assert list(attributes.json()["total"]["age_bands"]) == list(no_bands)  # youngest first
    porch = r["porch_attributes"]
    assert porch["per_device"] == []
    assert (porch["total"]["face_events"], porch["total"]["estimated"], porch["total"]["genders"]) == (
        1,
        1,
        {"female": 0, "male": 1},
    )

    fleet = r["fleet"]
    assert [a["device_id"] for a in fleet["agents"]] == ["door-1", "door-2"]
    door1 = fleet["agents"][0]
    assert (door1["online"], door1["agent_version"], door1["device_status"]) == (True, "test", "active")
    assert fleet["gallery_revision"] == 0 and fleet["server_time"]
    assert [a["device_id"] for a in r["one"]["agents"]] == ["door-2"]


OUT_OF_RANGE: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/audit", {"params": {"since": "0001-01-01T00:00:00+01:00"}}),
    ("GET", "/api/snapshots", {"params": {"until": "0001-01-01T00:00:00+01:00"}}),
    ("GET", f"/api/rollouts/{2**70}", {}),
    ("POST", f"/api/rollouts/{2**70}/pause", {"json": {}}),
    (
        "POST",
        "/api/rollouts",
        {"json": {"model_id": "m@1", "target": {"kind": "all"}, "max_failures": {"count": 10**30}}},
    ),
]
"""Admin requests whose values lie outside what a date or a database integer holds."""


async def out_of_range(harness: Harness, request: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    method, path, options = request
    async with client(harness) as http:
        return problem(await http.request(method, path, **options), 400, "INVALID_ARGUMENT")


def test_bad_queries_are_400_problems(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness, harness.query_token) as http:
            backwards = {"start": WINDOW["end"], "end": WINDOW["start"]}
            return [
                problem(await http.get("/api/events", params=backwards), 400, "INVALID_ARGUMENT"),
                problem(
                    await http.get("/api/events", params={"start": "2024-01-01T00:00:00"}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(await http.get("/api/events", params={"decision": "maybe"}), 400, "INVALID_ARGUMENT"),
                problem(
                    await http.get("/api/events", params={"page_token": "garbage!"}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(
                    await http.get("/api/events/counts", params={"interval_seconds": 1}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(
                    await http.get("/api/events/counts", params={"person_id": "alice"}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(
                    await http.get("/api/fleet", params={"device_id": "no way"}), 400, "INVALID_ARGUMENT"
                ),
                problem(await http.get("/api/events", params={"camera": ""}), 400, "INVALID_ARGUMENT"),
                problem(
                    await http.get("/api/events/access", params=[("door", f"d{i}") for i in range(101)]),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(
                    await http.get("/api/events/attributes", params={"person_id": "alice"}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(
                    await http.get("/api/events/attributes", params={"per_device": "perhaps"}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                problem(
                    await http.get("/api/events", params={"end": "0001-01-01T00:00:00Z"}),
                    400,
                    "INVALID_ARGUMENT",
                ),
                *[await out_of_range(harness, request) for request in OUT_OF_RANGE],
            ]

    results = run(scenario)
    assert "end: Value error, give a time between 1970-01-02 and 9999-12-30" in results[11]["detail"]
    for result, request in zip(results[12:], OUT_OF_RANGE, strict=True):
        assert ("9999-12-30" in result["detail"]) == ("0001" in str(request)), (request, result)
    assert "max_failures.count must be 0–1000000" in results[-1]["detail"]
    assert "must be after start" in results[0]["detail"]
    assert results[2]["errors"][0]["field"].startswith("decision")
    assert "interval_seconds must be 60" in results[4]["detail"]
    assert "cannot filter by person_ids" in results[5]["detail"]
    assert "filter cameras: '' is not a camera name: use 1–128 characters" in results[7]["detail"]
    assert "filter doors: at most 100 values" in results[8]["detail"]
    assert results[9]["detail"] == "AttributeDistribution cannot filter by person_ids; use ListEvents"
    assert results[10]["errors"][0]["field"].startswith("per_device")


def test_counts_past_the_rows_one_answer_holds_are_refused_saying_how_to_ask_for_fewer(
    tmp_path: Path, pki: Pki, enroller: Enroller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REPORTS hold 4 hourly counts per device (2 per device), 3 for the fleet: with 3 rows at most an
    answer, those per device are refused (400 over HTTP, INVALID_ARGUMENT over gRPC), and what the message
    offers instead is answered: the fleet's counts, one device's, a longer interval."""
    monkeypatch.setattr(sql_events, "MAX_COUNT_ROWS", 3)

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            query = await reported(harness)
            hourly = {**WINDOW, "interval_seconds": 3600}
            async with client(harness, harness.query_token) as http:
                refused = problem(
                    await http.get("/api/events/counts", params=hourly), 400, "INVALID_ARGUMENT"
                )
                answered = [
                    (await http.get("/api/events/counts", params=params)).json()["counts"]
                    for params in (
                        {**hourly, "per_device": "false"},
                        {**hourly, "device_id": "door-1"},
                        {**WINDOW, "interval_seconds": 3 * 3600},
                    )
                ]
            try:
                await query.CountEvents(
                    query_pb2.CountEventsRequest(filter=window(), interval_seconds=3600),
                    metadata=harness.query_md,
                )
                grpc_refused: tuple[object, str] = (None, "")
            except grpc.aio.AioRpcError as error:
                grpc_refused = (error.code(), error.details() or "")
            return {"refused": refused, "answered": answered, "grpc": grpc_refused}

    r = run(scenario)
    detail = r["refused"]["detail"]
    assert f"counts from {T0.isoformat()} to {(T0 + timedelta(hours=3)).isoformat()}" in detail
    assert "per 3600 s interval and device are more than 3 rows" in detail
    for fix in ("longer interval_seconds", "shorter range", "device_id", "per_device=false"):
        assert fix in detail
    assert [len(rows) for rows in r["answered"]] == [3, 2, 2]
    assert r["grpc"] == (grpc.StatusCode.INVALID_ARGUMENT, detail)
