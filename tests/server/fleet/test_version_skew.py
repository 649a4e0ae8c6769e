"""Agents and a server of different releases, on a real server (mutual TLS, real SQLite): what a newer agent
sends that the server does not know is left out or deferred, never a refusal of the whole call; an agent
skips a release of a task it does not know and keeps its session; each side states its version."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet import __version__
from facefleet.agent.fleet import client as fleet_client
from facefleet.link import serde
from facefleet.link.fleet import Heartbeat
from facefleet.server.api.wire import fleet as fleet_wire
from facefleet.server.domain.models import Target
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import RolloutControl
from facefleet.v1 import events_pb2, fleet_pb2, models_pb2, query_pb2
from facefleet.vision.runtime import Runtime
from tests.server.conftest import Pki, next_update, run, serving
from tests.server.fleet.test_agent_sync import (
    MODEL,
    access_payload,
    delete,
    enrol,
    open_store,
    settings,
    syncing,
    until,
    vector_person,
)

FUTURE_TASK = "pose"
"""A task this release does not know, as a later release might add."""
NEW = "sface@2021dec-fp32"
"""An embedding model to roll out (the tests' SFace at FP32)."""


def now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


async def assignment(stream: Any) -> list[tuple[str, str]]:
    """The (task, model) pairs of the stream's next model assignment, past gallery updates and heartbeats."""
    while True:
        message = await next_update(stream, timeout=60)
        if message.HasField("models"):
            return [(r.task, r.model_id) for r in message.models.releases]


def test_register_takes_a_newer_agent_leaving_out_what_it_does_not_know_logged_once(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    request = fleet_pb2.RegisterRequest(
        device_id="door-1",
        agent_version="9.0.0",
        model_versions={"embedding": MODEL, FUTURE_TASK: "hopenet@v2"},
        model_precisions={"embedding": "bf16", "detection": "int4", FUTURE_TASK: "f32"},
        model_statuses=[
            models_pb2.ModelStatus(task="expression", model_id="mini-xception@fer2013", state=5, time=now())
        ],
    )
    caplog.set_level(logging.WARNING, logger="facefleet.server.fleet.skew")

    async def scenario() -> tuple[fleet_pb2.RegisterResponse, query_pb2.AgentStatus]:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = harness.fleet("door-1")
            welcome = await fleet.Register(request)
            await fleet.Register(request)  # logged once per agent and value
            await fleet.ReportModelStatus(
                fleet_pb2.ReportModelStatusRequest(
                    device_id="door-1",
                    statuses=[models_pb2.ModelStatus(task=FUTURE_TASK, model_id="hopenet@v2", state=3)],
                    model_versions={"embedding": MODEL, FUTURE_TASK: "hopenet@v3"},
                    model_precisions={"embedding": "f8"},
                )
            )
            status = await harness.query().FleetStatus(
                query_pb2.FleetStatusRequest(), metadata=harness.query_md
            )
            return welcome, status.agents[0]

    welcome, agent = run(scenario)
    assert welcome.server_version == __version__
    assert (agent.agent_version, dict(agent.model_versions)) == ("9.0.0", {"embedding": MODEL})
    assert dict(agent.model_precisions) == {"embedding": "bf16"}
    lines = [r.getMessage() for r in caplog.records]
    for note in (
        "model_statuses[0]: state 5",
        "model_versions['pose']",
        "model_precisions['detection']: precision 'int4'",
        "model_precisions['pose']",
        "statuses[0]: task 'pose'",
        "model_versions['pose']",
        "model_precisions['embedding']: precision 'f8'",
    ):
        assert any(note in line for line in lines), note
    assert sum("model_precisions['detection']" in line for line in lines) == 1
    assert all("The agent is newer than the server: upgrade the server" in line for line in lines)


def test_events_of_a_kind_or_decision_the_server_does_not_know_are_deferred_not_rejected(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    def event(**values: Any) -> events_pb2.Event:
        return events_pb2.Event(
            event_id=str(uuid.uuid4()), device_id="door-1", time=now(), camera="c", **values
        )

    events = [
        event(kind=events_pb2.EVENT_KIND_FACE, decision=events_pb2.DECISION_UNKNOWN),
        event(kind=3, decision=events_pb2.DECISION_UNKNOWN),
        event(kind=events_pb2.EVENT_KIND_FACE, decision=7),
        event(kind=events_pb2.EVENT_KIND_UNSPECIFIED, decision=events_pb2.DECISION_UNKNOWN),
    ]

    async def scenario() -> fleet_pb2.ReportResultsResponse:
        async with serving(tmp_path, pki, enroller) as harness:
            fleet = await harness.registered("door-1")
            return await fleet.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id="door-1", events=events)
            )

    response = run(scenario)
    assert response.stored == 1
    assert [r.event_id for r in response.rejected] == [events[3].event_id]  # malformed in any release
    deferred = {r.event_id: r.reason for r in response.deferred}
    assert list(deferred) == [events[1].event_id, events[2].event_id]
    assert deferred[events[1].event_id].startswith("kind 3 is not known to this server")
    assert deferred[events[2].event_id].startswith("decision 7 is not known")
    assert "the agent is newer" in deferred[events[2].event_id]
    assert "upgrade the server" in deferred[events[2].event_id]


def test_watch_serves_an_embedding_model_the_server_has_no_gallery_of_and_logs_it_once(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent's gallery then has no embeddings of its model, but its session goes on: heartbeats (and any
    model assignment) reach it, and the server names the model once per device."""
    caplog.set_level(logging.WARNING, logger="facefleet.server.fleet.link")

    async def scenario() -> tuple[list[list[str]], int, int, dict[str, Any], int]:
        async with serving(tmp_path, pki, enroller, gallery={"heartbeat_seconds": 1}) as harness:
            head = await enrol(harness, vector_person("eileen", 1))
            fleet = await harness.registered("door-1")
            served = []
            for _ in range(2):  # the second stream is not logged again
                stream = fleet.Watch(
                    fleet_pb2.WatchRequest(device_id="door-1", embedding_models=["sface@2022new"])
                )
                gallery, heartbeat = await next_update(stream), await next_update(stream)
                stream.cancel()
                served.append([gallery.WhichOneof("update"), heartbeat.WhichOneof("update")])
                without = sum(len(p.embeddings) for p in gallery.gallery.upserts)
            known = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", embedding_models=[MODEL]))
            people = len((await next_update(known)).gallery.upserts[0].embeddings)
            known.cancel()
            with open_store(tmp_path / "agent.db") as store:
                async with syncing(settings(harness, pki, models=("sface@2022new",)), store) as sync:
                    await until(lambda: sync.applied_revision == head, what="the gallery")
                    await asyncio.sleep(1.5)  # a heartbeat: the session stays
                    return served, without, people, sync.status(), sync.connects

    served, without, embeddings, status, connects = run(scenario)
    assert served == [["gallery", "heartbeat"], ["gallery", "heartbeat"]]
    assert without == 0  # no embeddings of a model the server has no gallery of
    assert embeddings == 1  # the server's own model still comes with its embeddings
    assert (status["last_error"], connects) == (None, 1)
    assert (status["server_version"], status["server_embedding_models"]) == (__version__, [MODEL])
    warnings = [r.getMessage() for r in caplog.records if r.name == "facefleet.server.fleet.link"]
    assert len(warnings) == 1, warnings  # once per device and model, however often it watches
    assert "device door-1 watches embedding model sface@2022new" in warnings[0]
    assert f"it enrols with {MODEL}" in warnings[0] and "Roll one of those models out" in warnings[0]


@pytest.mark.slow
def test_an_agent_on_a_rolled_back_embedding_model_is_served_and_assigned_its_model_back(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    """An agent that switched to a rollout's embedding model and was offline when the rollout was rolled
    back watches that model, which the server no longer has a gallery of: its stream brings it the
    assignment back to the server's model (assignments travel only on Watch)."""

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.1}) as harness:
            server = harness.server
            catalog = ModelCatalog(server.state.models, server.models, runtime)
            await asyncio.to_thread(
                catalog.publish, model_irs[NEW], "embedding", "sface", "2021dec-fp32", "FP32"
            )
            await enrol(harness, vector_person("eileen", 1))
            fleet = harness.fleet("door-1")
            await fleet.Register(
                fleet_pb2.RegisterRequest(device_id="door-1", model_versions={"embedding": MODEL})
            )
            stream = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", embedding_models=[MODEL]))
            control = RolloutControl(server.state, catalog, runtime=runtime, settle_seconds=0.1)
            started = await asyncio.to_thread(control.start, NEW, Target("all"))
            rolled_out = await assignment(stream)
            stream.cancel()  # the agent switches to the new model, then goes offline

            await asyncio.to_thread(control.rollback, started.rollout.rollout_id)
            await until(lambda: NEW not in server.enrolment.embedding_models(), what="the rollback")
            await fleet.Register(
                fleet_pb2.RegisterRequest(device_id="door-1", model_versions={"embedding": NEW})
            )
            back = fleet.Watch(fleet_pb2.WatchRequest(device_id="door-1", embedding_models=[NEW]))
            rolled_back = await assignment(back)
            back.cancel()
            return rolled_out, rolled_back

    rolled_out, rolled_back = run(scenario)
    assert rolled_out == [("embedding", NEW)]
    assert rolled_back == [("embedding", MODEL)]


def test_an_agent_skips_a_release_of_a_task_it_does_not_know_reports_it_and_keeps_its_session(
    tmp_path: Path, pki: Pki, enroller: Enroller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server (as a newer one would) assigns a model of a task this agent does not know: the agent says
    so in a failed status and goes on applying gallery changes on the same session."""
    encode = serde.watch_update_to_proto

    def with_future_release(update: Any) -> fleet_pb2.WatchResponse:
        if not isinstance(update, Heartbeat):
            return encode(update)
        future = models_pb2.ModelRelease(task=FUTURE_TASK, model_id="hopenet@v2", rollout_id=7)
        return fleet_pb2.WatchResponse(models=models_pb2.ModelAssignment(releases=[future]))

    reported: list[models_pb2.ModelStatus] = []
    decode = fleet_wire.report_models_from_proto

    def recorded(request: fleet_pb2.ReportModelStatusRequest) -> Any:
        reported.extend(request.statuses)
        return decode(request)

    monkeypatch.setattr(serde, "watch_update_to_proto", with_future_release)  # the server's encoder only
    monkeypatch.setattr(fleet_wire, "report_models_from_proto", recorded)

    async def scenario() -> tuple[int, int, int, str | None]:
        async with serving(tmp_path, pki, enroller, gallery={"heartbeat_seconds": 1}) as harness:
            await enrol(harness, vector_person("eileen", 1))
            with open_store(tmp_path / "agent.db") as store:
                async with syncing(settings(harness, pki), store) as sync:
                    await until(lambda: reported, what="the refusal")
                    revision = await delete(harness, "eileen")
                    await until(lambda: sync.applied_revision == revision, what="the deletion")
                    await asyncio.sleep(1.5)  # another assignment: reported once
                    return len(store.gallery.people()), sync.connects, len(reported), sync.last_error

    people, connects, reports, error = run(scenario)
    assert (people, connects, reports, error) == (0, 1, 1, None)
    (status,) = reported
    assert (status.task, status.model_id, status.rollout_id) == (FUTURE_TASK, "hopenet@v2", 7)
    assert (status.state, status.retrying) == (models_pb2.MODEL_ACTIVATION_FAILED, False)
    assert "does not know the task 'pose'" in status.reason and "upgrade the agent" in status.reason


def test_an_agent_keeps_events_the_server_defers_and_reports_them_at_the_next_connection(
    tmp_path: Path, pki: Pki, enroller: Enroller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a newer agent would: one event goes out with a kind this server does not know."""
    payloads = [access_payload("door-1", time.time()) for _ in range(3)]
    newer = payloads[0].envelope.event_id
    encode = fleet_client.report_to_proto

    def with_newer_kind(*args: Any) -> tuple[fleet_pb2.ReportResultsRequest, list[tuple[str, str]]]:
        request, refused = encode(*args)
        for event in request.events:
            if event.event_id == newer:
                event.kind = 3  # type: ignore[assignment]
        return request, refused

    async def scenario() -> tuple[int, int, dict[str, Any], int, int]:
        async with serving(tmp_path, pki, enroller) as harness:
            with open_store(tmp_path / "agent.db") as store:
                monkeypatch.setattr(fleet_client, "report_to_proto", with_newer_kind)
                async with syncing(settings(harness, pki), store) as sync:
                    for payload in payloads:
                        sync.submit(payload)
                    await until(lambda: sync.reported == 2, what="the two known events")
                    await asyncio.sleep(1.0)  # reports go on: the deferred one is not sent again
                    kept, refused, status = store.reports.count(), sync.refused, sync.status()
                monkeypatch.setattr(fleet_client, "report_to_proto", encode)  # as if the server knew it now
                async with syncing(settings(harness, pki), store) as sync:
                    await until(lambda: sync.reported == 1, what="the deferred event")
                    await until(lambda: store.reports.count() == 0, what="the acknowledgement")
                return (
                    kept,
                    refused,
                    status,
                    store.reports.refused(),
                    len(harness.server.state.event_devices([newer])),
                )

    kept, refused, status, refused_in_store, stored = run(scenario)
    assert (kept, refused, refused_in_store) == (1, 0, 0)
    assert status["reports_deferred"] == 1
    assert stored == 1
