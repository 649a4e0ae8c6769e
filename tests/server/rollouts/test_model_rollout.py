"""Model rollouts end to end: a real server over mutual TLS, real SQLite, the real expression model published
at another precision. Rollouts are started, paused and rolled back through the CLI on the state directory
while the server runs (it notices through its poll); the Watch streams carry the assignments to the right
agents only; agents' activation reports show up in fleet status and `rollout show`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.link.checks import utc_now
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.server.cli.main import main
from facefleet.server.domain.models import PublishedModel, Target
from facefleet.server.fleet.link import FleetHandler, FleetSettings
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.rollouts import plan as rollouts
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.distribution import ModelDistribution
from facefleet.server.rollouts.files import CHUNK_BYTES, ModelFiles
from facefleet.v1 import fleet_pb2, models_pb2, query_pb2
from facefleet.vision.runtime import Runtime
from tests.server.conftest import Harness, Pki, next_update, run, serving

OLD = "mini-xception@fer2013"
NEW = "mini-xception@fer2013-fp32"
FAST = {"fleet": {"poll_seconds": 0.1}, "gallery": {"heartbeat_seconds": 1}}


async def publish_expression_models(
    harness: Harness, runtime: Runtime, irs: dict[str, Path]
) -> dict[str, PublishedModel]:
    """The default expression model and its FP32 version, published on the running server's state."""
    catalog = ModelCatalog(harness.server.state.models, harness.server.models, runtime)

    def publish() -> dict[str, PublishedModel]:
        old = catalog.publish(irs[OLD], "expression", "mini-xception", "fer2013", "FP16", "MIT")
        new = catalog.publish(irs[NEW], "expression", "mini-xception", "fer2013-fp32", "FP32", "MIT")
        return {OLD: old, NEW: new}

    return await asyncio.to_thread(publish)


async def watching(harness: Harness, device: str, groups: tuple[str, ...] = ()) -> Any:
    """Register a device running the default expression model and open its Watch stream (past the
    initial snapshot)."""
    stub = harness.fleet(device)
    await stub.Register(
        fleet_pb2.RegisterRequest(
            device_id=device,
            agent_version="test",
            model_versions={"expression": OLD},
            model_precisions={"expression": "f32"},
            groups=groups,
        )
    )
    stream = stub.Watch(fleet_pb2.WatchRequest(device_id=device, from_revision=0))
    assert (await next_update(stream)).HasField("gallery")
    return stream


async def next_models(stream: Any) -> list[models_pb2.ModelRelease]:
    """The next ModelAssignment of a stream, skipping heartbeats and gallery deltas."""
    while True:
        message = await next_update(stream)
        if message.HasField("models"):
            return list(message.models.releases)


async def quiet(stream: Any) -> None:
    """The stream's next message is a heartbeat: nothing was assigned to this device."""
    message = await next_update(stream, timeout=5)
    assert message.WhichOneof("update") == "heartbeat", message


async def cli(harness: Harness, *argv: str) -> Any:
    """Run `facefleet-server --state-dir <the server's> …--json` in a thread, as another process would."""
    state_dir = str(harness.server.paths.state_dir)
    code, out = await asyncio.to_thread(_main, ["--state-dir", state_dir, *argv, "--json"])
    assert code == 0, out
    return json.loads(out)


def _main(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def summary(releases: list[models_pb2.ModelRelease]) -> list[tuple[str, str, int, int]]:
    return [(r.task, r.model_id, r.rollout_id, len(r.files)) for r in releases]


@pytest.mark.slow
def test_a_group_rollout_reaches_its_agents_only_and_a_rollback_returns_them(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **FAST) as harness:
            models = await publish_expression_models(harness, runtime, model_irs)
            lobby = await watching(harness, "door-1", ("lobby",))
            east = await watching(harness, "door-2", ("east",))
            await quiet(lobby)

            started = await cli(harness, "rollout", "start", NEW, "--group", "lobby")
            rollout_id = started["rollout_id"]
            assert (started["state"], started["target"]["group"]) == ("active", "lobby")
            [release] = await next_models(lobby)
            assert (release.task, release.model_id, release.rollout_id) == ("expression", NEW, rollout_id)
            assert [(f.name, f.size, f.sha256) for f in release.files] == [
                (f.name, f.size, f.sha256) for f in models[NEW].files
            ]
            assert json.loads(release.manifest_json)["precision"] == "FP32"
            await quiet(east)

            shown = await cli(harness, "rollout", "show", str(rollout_id))
            assert [(d["device_id"], d["state"], d["previous_model_id"]) for d in shown["devices"]] == [
                ("door-1", "assigned", OLD)
            ]

            # pausing keeps door-1 on the new version: nothing changes for either stream
            assert (await cli(harness, "rollout", "pause", str(rollout_id)))["state"] == "paused"
            await quiet(lobby)
            await quiet(east)

            assert (await cli(harness, "rollout", "rollback", str(rollout_id)))["state"] == "rolled_back"
            assert summary(await next_models(lobby)) == [("expression", OLD, 0, 2)]
            await quiet(east)

            # a new rollout to the whole fleet supersedes the rolled-back one
            everyone = (await cli(harness, "rollout", "start", NEW, "--percent", "100"))["rollout_id"]
            assert summary(await next_models(lobby)) == [("expression", NEW, everyone, 2)]
            assert summary(await next_models(east)) == [("expression", NEW, everyone, 2)]
            lobby.cancel()
            east.cancel()

    run(scenario)


@pytest.mark.slow
def test_a_reconnecting_agent_gets_its_assignment_and_unrelated_rollouts_stay_put(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **FAST) as harness:
            await publish_expression_models(harness, runtime, model_irs)
            models = harness.server.state.models
            first = await cli(harness, "rollout", "start", NEW, "--group", "lobby")
            stream = await watching(harness, "door-1", ("lobby",))
            assert summary(await next_models(stream)) == [("expression", NEW, first["rollout_id"], 2)]
            stream.cancel()
            second = await cli(harness, "rollout", "start", OLD, "--group", "east")
            assert models.get_rollout(first["rollout_id"]).state == "active"
            again = await watching(harness, "door-1", ("lobby",))
            assert summary(await next_models(again)) == [("expression", NEW, first["rollout_id"], 2)]
            rolled = await cli(harness, "rollout", "rollback", str(second["rollout_id"]))
            assert rolled["state"] == "rolled_back"
            assert models.get_rollout(first["rollout_id"]).state == "active"
            await quiet(again)
            again.cancel()

    run(scenario)


def test_activation_reports_show_in_fleet_status_and_rollout_progress(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    def status(state: int, reason: str = "", rollout_id: int = 1) -> models_pb2.ModelStatus:
        return models_pb2.ModelStatus(
            task="expression",
            model_id=NEW,
            rollout_id=rollout_id,
            state=state,  # type: ignore[arg-type]
            reason=reason,
            time=Timestamp(seconds=1_790_000_000),
        )

    async def scenario() -> tuple[query_pb2.FleetStatusResponse, Any, dict[str, grpc.StatusCode]]:
        async with serving(tmp_path, pki, enroller, **FAST) as harness:
            await publish_expression_models(harness, runtime, model_irs)
            rollout_id = (await cli(harness, "rollout", "start", NEW, "--all"))["rollout_id"]
            for device in ("door-1", "door-2"):
                stream = await watching(harness, device, ("lobby",) if device == "door-1" else ())
                await next_models(stream)
                stream.cancel()
            door1, door2 = harness.fleet("door-1"), harness.fleet("door-2")
            await door1.ReportModelStatus(
                fleet_pb2.ReportModelStatusRequest(
                    device_id="door-1",
                    statuses=[status(models_pb2.MODEL_ACTIVATION_ACTIVE, rollout_id=rollout_id)],
                    model_versions={"expression": NEW},
                    model_precisions={"expression": "int8 (mini-xception@fer2013-int8-local)"},
                )
            )
            await door2.ReportModelStatus(
                fleet_pb2.ReportModelStatusRequest(
                    device_id="door-2",
                    statuses=[
                        status(
                            models_pb2.MODEL_ACTIVATION_FAILED,
                            "model.bin: sha256 differs from the release",
                            rollout_id,
                        )
                    ],
                )
            )
            fleet = await harness.query().FleetStatus(
                query_pb2.FleetStatusRequest(), metadata=harness.query_md
            )
            shown = await cli(harness, "rollout", "show", str(rollout_id))
            errors: dict[str, grpc.StatusCode] = {}
            bad = {
                "too many": [status(models_pb2.MODEL_ACTIVATION_ACTIVE)] * 17,
                "no state": [models_pb2.ModelStatus(task="expression", model_id=NEW)],
                "long reason": [status(models_pb2.MODEL_ACTIVATION_FAILED, "x" * 600)],
            }
            for name, statuses in bad.items():
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await door1.ReportModelStatus(
                        fleet_pb2.ReportModelStatusRequest(device_id="door-1", statuses=statuses)
                    )
                errors[name] = info.value.code()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await door1.ReportModelStatus(
                    fleet_pb2.ReportModelStatusRequest(
                        device_id="door-1", model_precisions={"expression": "int8 (not-a-model)"}
                    )
                )
            assert "model id 'not-a-model' is not valid" in (info.value.details() or "")
            errors["bad precision"] = info.value.code()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await harness.fleet("lobby").ReportModelStatus(
                    fleet_pb2.ReportModelStatusRequest(device_id="lobby", statuses=[])
                )
            errors["unregistered"] = info.value.code()
            return fleet, shown, errors

    fleet, shown, errors = run(scenario)
    agents = {a.device_id: a for a in fleet.agents}
    assert list(agents["door-1"].groups) == ["lobby"] and list(agents["door-2"].groups) == []
    assert dict(agents["door-1"].model_versions) == {"expression": NEW}
    assert dict(agents["door-2"].model_versions) == {"expression": OLD}
    # what each runs at: as registered, then as door-1 reported after its switch
    assert dict(agents["door-1"].model_precisions) == {
        "expression": "int8 (mini-xception@fer2013-int8-local)"
    }
    assert dict(agents["door-2"].model_precisions) == {"expression": "f32"}
    [failed] = agents["door-2"].model_statuses
    assert (failed.model_id, failed.state, failed.reason) == (
        NEW,
        models_pb2.MODEL_ACTIVATION_FAILED,
        "model.bin: sha256 differs from the release",
    )
    assert [s.state for s in agents["door-1"].model_statuses] == [models_pb2.MODEL_ACTIVATION_ACTIVE]
    assert [(d["device_id"], d["state"], d["reason"]) for d in shown["devices"]] == [
        ("door-1", "active", ""),
        ("door-2", "failed", "model.bin: sha256 differs from the release"),
    ]
    assert errors == {
        "too many": grpc.StatusCode.INVALID_ARGUMENT,
        "no state": grpc.StatusCode.INVALID_ARGUMENT,
        "long reason": grpc.StatusCode.INVALID_ARGUMENT,
        "bad precision": grpc.StatusCode.INVALID_ARGUMENT,
        "unregistered": grpc.StatusCode.FAILED_PRECONDITION,
    }


def test_in_process_rollout_changes_reach_the_streams_without_waiting_for_the_poll(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    async def scenario() -> None:
        slow_poll = {"fleet": {"poll_seconds": 60}, "gallery": {"heartbeat_seconds": 1}}
        async with serving(tmp_path, pki, enroller, **slow_poll) as harness:
            await publish_expression_models(harness, runtime, model_irs)
            stream = await watching(harness, "door-1")
            control = harness.server.rollout_control()
            started = await asyncio.to_thread(control.start, NEW, Target("percent", percent=100))
            assert summary(await next_models(stream)) == [("expression", NEW, started.rollout.rollout_id, 2)]
            await asyncio.to_thread(control.rollback, started.rollout.rollout_id)
            assert summary(await next_models(stream)) == [("expression", OLD, 0, 2)]
            stream.cancel()

    run(scenario)


@pytest.mark.slow
def test_a_rollout_counts_as_announced_only_once_its_assignment_was_sent(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    """The stream computes door-1's releases while the gallery is ahead of it, so it sends the gallery
    first; the rollout is paused and the stream ends before the assignment goes out. door-1 never received
    the new version, so the paused rollout must not cover it when it reconnects."""

    async def scenario() -> None:
        slow_poll = {"fleet": {"poll_seconds": 60}, "gallery": {"heartbeat_seconds": 1}}
        async with serving(tmp_path, pki, enroller, **slow_poll) as harness:
            server = harness.server
            assert server.fanout is not None
            state, models = server.state, server.state.models
            await publish_expression_models(harness, runtime, model_irs)
            (await watching(harness, "door-1")).cancel()
            distribution = ModelDistribution(state, server.catalog, ModelFiles(CHUNK_BYTES))
            handler = FleetHandler(state, server.fanout, FleetSettings(heartbeat_seconds=1), lambda: ())
            handler.models = distribution
            updates = handler.watch("door-1", 0, "", ())
            assert isinstance(await anext(updates), GalleryDelta)  # the snapshot

            # another process enrols someone and starts a rollout; this server learns of the rollout first
            vector = np.ones(128, np.float32)
            await asyncio.to_thread(
                state.add_person, Person("eileen", embeddings=(Embedding(OLD, vector),)), [], utc_now()
            )
            rollout = await asyncio.to_thread(models.add_rollout, NEW, Target("all"), "active", utc_now())
            await server.fanout.publish_models(models.models_revision())
            delta = await anext(updates)
            assert isinstance(delta, GalleryDelta) and [p.person_id for p in delta.upserts] == ["eileen"]
            assert models.device_rollouts("door-1") == {}, "not sent yet, so not announced"
            await asyncio.to_thread(
                models.change_rollout, rollout.rollout_id, lambda r: rollouts.paused(r, utc_now())
            )
            await updates.aclose()
            assert models.device_rollouts("door-1") == {}

            again = await watching(harness, "door-1")
            await quiet(again)  # the paused rollout does not cover door-1
            again.cancel()
            await asyncio.to_thread(
                models.change_rollout, rollout.rollout_id, lambda r: rollouts.resumed(r, utc_now())
            )
            await server.refresh()
            stream = await watching(harness, "door-1")
            assert summary(await next_models(stream)) == [("expression", NEW, rollout.rollout_id, 2)]

            async def recorded() -> None:
                while not models.device_rollouts("door-1"):
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(recorded(), 10)  # recorded once the server has sent it
            await asyncio.to_thread(
                models.change_rollout, rollout.rollout_id, lambda r: rollouts.paused(r, utc_now())
            )
            await server.refresh()
            await quiet(stream)  # sent, so announced: the paused rollout keeps door-1 on it
            assert [d.device_id for d in models.rollout_devices(rollout.rollout_id)] == ["door-1"]
            stream.cancel()

    run(scenario)


def test_a_status_report_records_a_rollout_whose_announcement_was_not_recorded(
    tmp_path: Path, pki: Pki, enroller: Enroller, runtime: Runtime, model_irs: dict[str, Path]
) -> None:
    """The stream may break right after sending the assignment, before the server recorded it: the
    agent's report of the rollout is proof enough that it received it."""

    async def scenario() -> Any:
        async with serving(tmp_path, pki, enroller, **FAST) as harness:
            await publish_expression_models(harness, runtime, model_irs)
            rollout_id = (await cli(harness, "rollout", "start", NEW, "--all"))["rollout_id"]
            stub = harness.fleet("door-2")
            await stub.Register(
                fleet_pb2.RegisterRequest(device_id="door-2", model_versions={"expression": OLD})
            )
            before = await cli(harness, "rollout", "show", str(rollout_id))
            active = models_pb2.ModelStatus(
                task="expression",
                model_id=NEW,
                rollout_id=rollout_id,
                state=models_pb2.MODEL_ACTIVATION_ACTIVE,
            )
            await stub.ReportModelStatus(
                fleet_pb2.ReportModelStatusRequest(
                    device_id="door-2", statuses=[active], model_versions={"expression": NEW}
                )
            )
            return before, await cli(harness, "rollout", "show", str(rollout_id))

    before, after = run(scenario)
    assert before["devices"] == []
    assert [(d["device_id"], d["state"], d["previous_model_id"]) for d in after["devices"]] == [
        ("door-2", "active", OLD)
    ]
