"""AdminService's model and rollout calls over the operators' TLS listener with an admin token: a real
server on port 0, real SQLite, the real expression model (the fer TFLite converted at FP32, and IR pairs
uploaded and imported like it). Rollout changes reach watching agents at once (the server's poll is set to a
minute, so only the in-process change can deliver them in time)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timezone
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from facefleet.link.checks import utc_now
from facefleet.server.api.security import new_token
from facefleet.server.api.wire import admin as admin_wire
from facefleet.server.domain.models import Target
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.rollouts.uploads import UploadHeader
from facefleet.v1 import admin_pb2, fleet_pb2
from tests.server.conftest import Harness, Pki, next_update, run, serving
from tests.server.fleet.test_fleet_service import random_embedding
from tests.server.http.clients import client
from tests.vision.models.bombs import broadcast_bomb_ir, constant_bomb_onnx

OLD = "mini-xception@fer2013"
NEW = "mini-xception@fer2013-fp32"
EMBEDDING = "sface@2021dec-fp32"
SLOW_POLL = {"fleet": {"poll_seconds": 60}, "gallery": {"heartbeat_seconds": 1}}
FP32 = admin_pb2.MODEL_PRECISION_FP32


def upload(
    files: dict[str, bytes],
    *,
    task: str = "expression",
    name: str = "mini-xception",
    version: str = "fer2013-fp32",
    precision: int = FP32,
    announce: tuple[str, ...] | None = None,
    chunk_bytes: int = 32 * 1024,
) -> Iterator[admin_pb2.PublishModelRequest]:
    """A PublishModel stream: the header announcing `announce` (default: the files' names), then chunks."""
    yield admin_pb2.PublishModelRequest(
        header=admin_pb2.PublishModelHeader(
            task=task,
            name=name,
            version=version,
            precision=precision,  # type: ignore[arg-type]
            licence="MIT",
            files=list(files) if announce is None else announce,
        )
    )
    for file_name, data in files.items():
        for start in range(0, len(data), chunk_bytes):
            chunk = admin_pb2.ModelUploadChunk(file=file_name, data=data[start : start + chunk_bytes])
            yield admin_pb2.PublishModelRequest(chunk=chunk)


def ir_files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("model.xml", "model.bin")}


async def publish(
    harness: Harness, requests: Iterator[admin_pb2.PublishModelRequest]
) -> admin_pb2.PublishedModel:
    response = await harness.admin().PublishModel(requests, metadata=harness.admin_md)
    return response.model


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def listed(harness: Harness, task: str = "") -> list[admin_pb2.PublishedModel]:
    response = await harness.admin().ListModels(
        admin_pb2.ListModelsRequest(task=task), metadata=harness.admin_md
    )
    return list(response.models)


def leftovers(harness: Harness) -> list[Path]:
    """Files of uploads still on disk (the uploads directory itself may exist, empty)."""
    uploads = harness.server.paths.uploads
    return sorted(uploads.rglob("*")) if uploads.exists() else []


def test_an_uploaded_model_is_converted_published_and_listed(
    tmp_path: Path, pki: Pki, enroller: Enroller, fer_tflite: Path
) -> None:
    killed = tmp_path / "state" / "uploads" / "upload-killed"  # left by a server killed mid-upload
    killed.mkdir(parents=True)
    (killed / "emotion.tflite").write_bytes(b"half a model")

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            assert leftovers(harness) == []
            model = await publish(harness, upload({"emotion.tflite": fer_tflite.read_bytes()}))
            stored = harness.server.models.root / "expression" / "mini-xception" / "fer2013-fp32"
            on_disk = {
                p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                for p in stored.glob("model.*")
            }
            assert (model.model_id, model.task, model.precision, model.licence) == (
                NEW,
                "expression",
                FP32,
                "MIT",
            )
            assert {f.name: (f.size, f.sha256) for f in model.files} == on_disk
            assert set(on_disk) == {"model.xml", "model.bin"}
            stored_model = harness.server.state.models.get_model(NEW)
            assert model.published_at.ToDatetime(timezone.utc) == stored_model.published_at
            assert not model.HasField("retired_at")
            [again] = await listed(harness)
            assert again == model
            assert await listed(harness, "embedding") == []
            assert leftovers(harness) == []

    run(scenario)


def test_bad_uploads_are_refused_and_leave_nothing(
    tmp_path: Path, pki: Pki, enroller: Enroller, fer_tflite: Path
) -> None:
    tflite = fer_tflite.read_bytes()
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[Iterator[admin_pb2.PublishModelRequest], grpc.StatusCode, str]] = [
        (
            upload({"big.onnx": bytes(300_000)}),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "max_upload_bytes (200000 bytes)",
        ),
        (upload({"../emotion.tflite": tflite}), invalid, "has path parts"),
        (upload({"models/emotion.tflite": tflite}), invalid, "has path parts"),
        (iter(list(upload({"emotion.tflite": tflite}))[1:]), invalid, "first message must be the header"),
        (upload({"other.tflite": tflite}, announce=("emotion.tflite",)), invalid, "did not announce"),
        (
            upload({}, announce=("emotion.tflite",)),
            invalid,
            "emotion.tflite of mini-xception@fer2013-fp32 were not sent",
        ),
        (upload({"model.xml": b"<net/>"}), invalid, "NAME.xml + NAME.bin"),
        (iter([]), invalid, "empty upload"),
        (
            upload({"emotion.tflite": tflite}, task="detection", name="yunet"),
            invalid,
            "cannot publish yunet@fer2013-fp32: ",
        ),
    ]

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with serving(tmp_path, pki, enroller, models={"max_upload_bytes": 200_000}) as harness:
            results = [
                await failure(harness.admin().PublishModel(requests, metadata=harness.admin_md))
                for requests, _, _ in cases
            ]
            assert await listed(harness) == []
            root = harness.server.models.root
            assert [p for p in root.rglob("*") if p.is_file()] == []
            assert leftovers(harness) == []
            return results

    for (code, details), (_, expected, fragment) in zip(run(scenario), cases, strict=True):
        assert code == expected, details
        assert fragment in details, details
        assert str(tmp_path) not in details  # the upload's temporary directory is not the caller's business


def test_model_bombs_and_a_publish_during_another_are_refused_and_the_server_publishes_on(
    tmp_path: Path, pki: Pki, enroller: Enroller, fer_tflite: Path
) -> None:
    onnx = constant_bomb_onnx(tmp_path / "bomb.onnx", 30_000)  # 2 KB, 3.6 GB to convert
    ir = broadcast_bomb_ir(tmp_path / "bomb.xml", 30_000)  # 6 KB, 3.6 GB to compile
    bombs = {
        "bomb@onnx": {"model.onnx": onnx.read_bytes()},
        "bomb@ir": {"model.xml": ir.read_bytes(), "model.bin": ir.with_suffix(".bin").read_bytes()},
    }

    async def scenario() -> None:
        async with serving(
            tmp_path, pki, enroller, models={"convert_memory_bytes": 1024 * 1024 * 1024}
        ) as harness:
            for model_id, files in bombs.items():
                version = model_id.split("@")[1]
                requests = upload(files, task="embedding", name="bomb", version=version)
                code, details = await failure(
                    harness.admin().PublishModel(requests, metadata=harness.admin_md)
                )
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
                assert f"cannot publish {model_id}: " in details
                assert "needs more memory than models.convert_memory_bytes (1073741824 bytes)" in details
                assert await listed(harness) == [] and leftovers(harness) == []
                assert [p for p in harness.server.models.root.rglob("*") if p.is_file()] == []
            converting = harness.server.handlers.models._converting
            converting.acquire()  # another publish is converting
            try:
                requests = upload({"emotion.tflite": fer_tflite.read_bytes()})
                code, details = await failure(
                    harness.admin().PublishModel(requests, metadata=harness.admin_md)
                )
            finally:
                converting.release()
            assert code == grpc.StatusCode.UNAVAILABLE, details
            assert f"another model is being converted; publish {NEW} again when it is done" in details
            assert await listed(harness) == [] and leftovers(harness) == []
            published = await harness.admin().PublishModel(
                upload({"emotion.tflite": fer_tflite.read_bytes()}), metadata=harness.admin_md
            )
            assert published.model.model_id == NEW
            assert [m.model_id for m in await listed(harness)] == [NEW]

    run(scenario)


@pytest.mark.parametrize(
    ("files", "source", "error"),
    [
        ((), None, "got none"),
        (("emotion.tflite",), "emotion.tflite", None),
        (("model.onnx",), "model.onnx", None),
        (("model.xml", "model.bin"), "model.xml", None),
        (("a.xml", "b.bin"), None, "NAME.xml + NAME.bin"),
        (("a.onnx", "b.onnx"), None, "announce one .onnx"),
        (("weights.bin",), None, "announce one .onnx"),
        (("model.onnx", "model.onnx"), None, "names a file twice"),
        ((".hidden.onnx",), None, "not valid"),
        (("..",), None, "path parts"),
        (("C:\\model.onnx",), None, "path parts"),
    ],
)
def test_an_upload_announces_the_files_of_one_model(
    files: tuple[str, ...], source: str | None, error: str | None
) -> None:
    if error is not None:
        with pytest.raises(InvalidArgumentError, match=re.escape(error)):
            UploadHeader("expression", "m", "v1", "FP32", "MIT", files)
    else:
        assert UploadHeader("expression", "m", "v1", "FP32", "MIT", files).source == source


@pytest.mark.parametrize(
    ("target", "expected", "error"),
    [
        (admin_pb2.RolloutTarget(), None, "target is missing"),
        (admin_pb2.RolloutTarget(all=True), Target("all"), None),
        (admin_pb2.RolloutTarget(all=False), None, "target.all must be true"),
        (admin_pb2.RolloutTarget(group="lobby"), Target("group", group="lobby"), None),
        (admin_pb2.RolloutTarget(group=""), None, "group '' is not valid"),
        (admin_pb2.RolloutTarget(percent=10), Target("percent", percent=10), None),
        (admin_pb2.RolloutTarget(percent=101), None, "percent must be 1–100"),
    ],
)
def test_rollout_targets_round_trip(
    target: admin_pb2.RolloutTarget, expected: Target | None, error: str | None
) -> None:
    if error is not None:
        with pytest.raises(InvalidArgumentError, match=re.escape(error)):
            admin_wire.target_from_proto(target)
        return
    assert admin_wire.target_from_proto(target) == expected
    assert expected is not None and admin_wire.target_to_proto(expected) == target


def test_other_tokens_are_refused(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin = harness.admin()
            md = harness.query_md
            target = admin_pb2.RolloutTarget(all=True)
            return [
                await failure(admin.PublishModel(upload({"m.onnx": b"x"}), metadata=md)),
                await failure(admin.ListModels(admin_pb2.ListModelsRequest(), metadata=md)),
                await failure(admin.RetireModel(admin_pb2.RetireModelRequest(model_id=NEW), metadata=md)),
                await failure(
                    admin.StartRollout(
                        admin_pb2.StartRolloutRequest(model_id=NEW, target=target), metadata=md
                    )
                ),
                await failure(
                    admin.ChangeRollout(
                        admin_pb2.ChangeRolloutRequest(rollout_id=1, action=admin_pb2.ROLLOUT_ACTION_PAUSE),
                        metadata=md,
                    )
                ),
                await failure(admin.ListRollouts(admin_pb2.ListRolloutsRequest(), metadata=md)),
                await failure(admin.GetRollout(admin_pb2.GetRolloutRequest(rollout_id=1), metadata=md)),
                await failure(admin.ListRollouts(admin_pb2.ListRolloutsRequest())),
            ]

    *denied, anonymous = run(scenario)
    assert {code for code, _ in denied} == {grpc.StatusCode.PERMISSION_DENIED}
    assert all("role 'query'" in details for _, details in denied)
    assert anonymous[0] == grpc.StatusCode.UNAUTHENTICATED


def test_an_upload_whose_token_is_revoked_while_it_comes_in_is_not_published(
    tmp_path: Path, pki: Pki, enroller: Enroller, fer_tflite: Path
) -> None:
    """The token is checked when the call starts and again once the whole upload is in, over gRPC and
    HTTP; a revoked token's upload is refused and audited as refused, and nothing is stored."""
    data = fer_tflite.read_bytes()

    async def upload_dir_made(harness: Harness) -> None:  # after the call was admitted
        while not list(harness.server.paths.uploads.glob("upload-*")):
            await asyncio.sleep(0.01)

    async def scenario() -> tuple[tuple[grpc.StatusCode, str], int, str, list[Any], list[str]]:
        async with serving(tmp_path, pki, enroller, tokens={"cache_seconds": 0}) as harness:
            state = harness.server.state
            tokens = {}
            for name in ("ops", "web"):
                tokens[name], record = new_token(name, "admin", utc_now())
                state.add_token(record)
            go = asyncio.Event()

            async def slow_upload() -> AsyncIterator[admin_pb2.PublishModelRequest]:
                requests = upload({"emotion.tflite": data})
                yield next(requests)
                await go.wait()
                for request in requests:
                    yield request

            md = (("authorization", f"Bearer {tokens['ops']}"),)
            call = asyncio.ensure_future(harness.admin().PublishModel(slow_upload(), metadata=md))
            await upload_dir_made(harness)
            state.revoke_token("ops")
            go.set()
            grpc_refusal = await failure(call)

            http_go = asyncio.Event()
            fields = {"task": "expression", "name": "mini-xception", "version": "web", "precision": "FP32"}

            async def slow_body() -> AsyncIterator[bytes]:
                for name, value in fields.items():
                    yield f'--B\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.tflite"\r\n\r\n'
                await http_go.wait()
                yield data + b"\r\n--B--\r\n"

            async with client(harness, tokens["web"]) as http:
                post = asyncio.ensure_future(
                    http.post(
                        "/api/models",
                        content=slow_body(),
                        headers={"content-type": "multipart/form-data; boundary=B"},
                    )
                )
                await upload_dir_made(harness)
                state.revoke_token("web")
                http_go.set()
                response = await post
            entries = await harness.admin().ListAudit(
                admin_pb2.ListAuditRequest(action_prefix="models."), metadata=harness.admin_md
            )
            outcomes = [f"{e.who} {e.action} {e.outcome}" for e in entries.entries]
            return grpc_refusal, response.status_code, response.text, await listed(harness), outcomes

    grpc_refusal, http_status, http_text, models, outcomes = run(scenario)
    assert grpc_refusal[0] == grpc.StatusCode.UNAUTHENTICATED, grpc_refusal
    assert http_status == 401, http_text
    assert models == []
    assert sorted(outcomes) == [
        "ops models.publish UNAUTHENTICATED",
        "web models.publish UNAUTHENTICATED",
    ]


# -- rollouts ----------------------------------------------------------------------------------------


async def watching(harness: Harness, device: str, groups: tuple[str, ...]) -> Any:
    """A registered device running OLD with its Watch stream open (past the initial snapshot)."""
    stub = harness.fleet(device)
    await stub.Register(
        fleet_pb2.RegisterRequest(
            device_id=device, agent_version="test", model_versions={"expression": OLD}, groups=groups
        )
    )
    stream = stub.Watch(fleet_pb2.WatchRequest(device_id=device, from_revision=0))
    assert (await next_update(stream)).HasField("gallery")
    return stream


async def next_models(stream: Any) -> list[tuple[str, int, int]]:
    """(model id, rollout id, number of files) of the stream's next ModelAssignment, skipping heartbeats;
    within 5 s, far less than the server's 60 s poll."""
    while True:
        message = await next_update(stream, timeout=5)
        if message.HasField("models"):
            return [(r.model_id, r.rollout_id, len(r.files)) for r in message.models.releases]


async def quiet(stream: Any) -> None:
    message = await next_update(stream, timeout=5)
    assert message.WhichOneof("update") == "heartbeat", message


@pytest.mark.slow
def test_rollouts_started_and_changed_over_grpc_reach_watching_agents_at_once(
    tmp_path: Path, pki: Pki, enroller: Enroller, model_irs: dict[str, Path]
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, **SLOW_POLL) as harness:
            admin, md = harness.admin(), harness.admin_md
            await publish(
                harness,
                upload(ir_files(model_irs[OLD]), version="fer2013", precision=admin_pb2.MODEL_PRECISION_FP16),
            )
            new = await publish(harness, upload(ir_files(model_irs[NEW]), chunk_bytes=1 << 20))
            assert [f.name for f in new.files] == ["model.bin", "model.xml"]
            assert await publish(harness, upload(ir_files(model_irs[NEW]))) == new  # the same again: a no-op
            code, details = await failure(
                admin.PublishModel(upload(ir_files(model_irs[OLD])), metadata=md)  # other files, same id
            )
            assert code == grpc.StatusCode.ALREADY_EXISTS and "another --version" in details, details
            lobby = await watching(harness, "door-1", ("lobby",))
            east = await watching(harness, "door-2", ("east",))

            started = await admin.StartRollout(
                admin_pb2.StartRolloutRequest(model_id=NEW, target=admin_pb2.RolloutTarget(group="lobby")),
                metadata=md,
            )
            rollout = started.rollout
            assert (rollout.model_id, rollout.task, rollout.state, rollout.target.group) == (
                NEW,
                "expression",
                admin_pb2.ROLLOUT_STATE_ACTIVE,
                "lobby",
            )
            assert (started.reembedded_count, started.without_crops_count) == (0, 0)
            assert await next_models(lobby) == [(NEW, rollout.rollout_id, 2)]
            await quiet(east)

            shown = await admin.GetRollout(
                admin_pb2.GetRolloutRequest(rollout_id=rollout.rollout_id), metadata=md
            )
            assert shown.rollout == rollout
            assert [(d.device_id, d.state, d.previous_model_id) for d in shown.devices] == [
                ("door-1", admin_pb2.ROLLOUT_DEVICE_STATE_ASSIGNED, OLD)
            ]
            [row] = harness.server.state.models.rollout_devices(rollout.rollout_id)
            assert shown.devices[0].updated_at.ToDatetime(timezone.utc) == row.updated_at

            async def change(action: int, **extra: Any) -> admin_pb2.Rollout:
                request = admin_pb2.ChangeRolloutRequest(
                    rollout_id=rollout.rollout_id, action=action, **extra
                )  # type: ignore[arg-type]
                return (await admin.ChangeRollout(request, metadata=md)).rollout

            assert (await change(admin_pb2.ROLLOUT_ACTION_PAUSE)).state == admin_pb2.ROLLOUT_STATE_PAUSED
            assert (await change(admin_pb2.ROLLOUT_ACTION_RESUME)).state == admin_pb2.ROLLOUT_STATE_ACTIVE
            await quiet(lobby)  # paused and resumed: door-1 keeps the new version throughout
            refusals = [
                await failure(change(admin_pb2.ROLLOUT_ACTION_RESUME)),
                await failure(change(admin_pb2.ROLLOUT_ACTION_RESUME, percent=50)),
                await failure(change(admin_pb2.ROLLOUT_ACTION_PAUSE, percent=50)),
                await failure(change(admin_pb2.ROLLOUT_ACTION_UNSPECIFIED)),
                await failure(admin.RetireModel(admin_pb2.RetireModelRequest(model_id=NEW), metadata=md)),
                await failure(admin.GetRollout(admin_pb2.GetRolloutRequest(rollout_id=99), metadata=md)),
                await failure(
                    admin.StartRollout(
                        admin_pb2.StartRolloutRequest(model_id=NEW, target=admin_pb2.RolloutTarget()),
                        metadata=md,
                    )
                ),
            ]
            assert [code for code, _ in refusals] == [
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.INVALID_ARGUMENT,
            ], refusals
            assert "not a percentage" in refusals[1][1] and "roll it back" in refusals[4][1]

            rolled = await change(admin_pb2.ROLLOUT_ACTION_ROLLBACK)
            assert rolled.state == admin_pb2.ROLLOUT_STATE_ROLLED_BACK
            assert await next_models(lobby) == [(OLD, 0, 2)]
            await quiet(east)

            everyone = await admin.StartRollout(
                admin_pb2.StartRolloutRequest(model_id=NEW, target=admin_pb2.RolloutTarget(percent=100)),
                metadata=md,
            )
            assert await next_models(east) == [(NEW, everyone.rollout.rollout_id, 2)]
            listed_rollouts = (
                await admin.ListRollouts(admin_pb2.ListRolloutsRequest(), metadata=md)
            ).rollouts
            assert [(r.rollout_id, r.state, r.target.WhichOneof("kind")) for r in listed_rollouts] == [
                (everyone.rollout.rollout_id, admin_pb2.ROLLOUT_STATE_ACTIVE, "percent"),
                (rollout.rollout_id, admin_pb2.ROLLOUT_STATE_ROLLED_BACK, "group"),
            ]

            # retiring: refused while a rollout uses the version, then no new rollout of it
            await admin.ChangeRollout(
                admin_pb2.ChangeRolloutRequest(
                    rollout_id=everyone.rollout.rollout_id, action=admin_pb2.ROLLOUT_ACTION_ROLLBACK
                ),
                metadata=md,
            )
            retired = (await admin.RetireModel(admin_pb2.RetireModelRequest(model_id=NEW), metadata=md)).model
            assert retired.HasField("retired_at")
            code, details = await failure(
                admin.StartRollout(
                    admin_pb2.StartRolloutRequest(model_id=NEW, target=admin_pb2.RolloutTarget(all=True)),
                    metadata=md,
                )
            )
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "retired" in details
            lobby.cancel()
            east.cancel()

    run(scenario)


@pytest.mark.slow
def test_an_embedding_rollout_reports_who_was_reembedded_and_who_needs_re_enrolment(
    tmp_path: Path, pki: Pki, enroller: Enroller, model_irs: dict[str, Path], astronaut_jpeg: bytes
) -> None:
    async def scenario() -> admin_pb2.StartRolloutResponse:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.05}) as harness:
            admin, md = harness.admin(), harness.admin_md
            await publish(
                harness,
                upload(
                    ir_files(model_irs[EMBEDDING]),
                    task="embedding",
                    name="sface",
                    version="2021dec-fp32",
                    chunk_bytes=1 << 20,
                ),
            )
            await admin.EnrollPerson(
                admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg]), metadata=md
            )
            await admin.EnrollPerson(
                admin_pb2.EnrollPersonRequest(
                    person_id="vector-only", embeddings=[random_embedding(np.random.default_rng(3))]
                ),
                metadata=md,
            )
            request = admin_pb2.StartRolloutRequest(
                model_id=EMBEDDING, target=admin_pb2.RolloutTarget(all=True)
            )
            started = await admin.StartRollout(request, metadata=md, timeout=60)
            person = await admin.GetPerson(admin_pb2.GetPersonRequest(person_id="eileen"), metadata=md)
            assert EMBEDDING in {e.model_id for e in person.person.embeddings}
            return started

    started = run(scenario)
    assert (started.rollout.task, started.rollout.state) == ("embedding", admin_pb2.ROLLOUT_STATE_ACTIVE)
    assert (started.reembedded_count, list(started.reembedded)) == (1, ["eileen"])
    assert (started.without_crops_count, list(started.without_crops)) == (1, ["vector-only"])
