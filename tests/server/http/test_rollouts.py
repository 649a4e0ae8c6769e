"""/api/models and /api/rollouts over HTTPS: a real expression model published by multipart upload (an IR
pair, as converted once per session), rolled out to a watching agent, paused, resumed and rolled back; bad
uploads refused with nothing left in the catalogue, the model store or the uploads directory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import fleet_pb2
from tests.server.conftest import Harness, Pki, next_update, run, serving
from tests.server.http.clients import client, problem

OLD = "mini-xception@fer2013"
NEW = "mini-xception@fer2013-fp32"
FIELDS = {"task": "expression", "name": "mini-xception", "version": "fer2013-fp32", "precision": "FP32"}


def model_files(directory: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("files", (name, (directory / name).read_bytes(), "application/octet-stream"))
        for name in ("model.xml", "model.bin")
    ]


def stored_files(harness: Harness) -> list[Path]:
    """Files in the model store and the uploads directory."""
    paths = harness.server.paths
    return sorted(
        p for root in (paths.models, paths.uploads) if root.exists() for p in root.rglob("*") if p.is_file()
    )


async def watching(harness: Harness) -> Any:
    """door-1, running OLD, with its Watch stream open (past the initial gallery snapshot)."""
    stub = harness.fleet("door-1")
    await stub.Register(
        fleet_pb2.RegisterRequest(
            device_id="door-1", agent_version="test", model_versions={"expression": OLD}
        )
    )
    stream = stub.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
    assert (await next_update(stream)).HasField("gallery")
    return stream


async def next_models(stream: Any) -> list[tuple[str, int]]:
    """(model id, rollout id) of the stream's next ModelAssignment, skipping heartbeats; within 5 s, far
    less than the server's 60 s poll (so only the HTTP call's own change can deliver it)."""
    while True:
        message = await next_update(stream, timeout=5)
        if message.HasField("models"):
            return [(r.model_id, r.rollout_id) for r in message.models.releases]


def test_a_model_is_published_by_upload_and_rolled_out_paused_resumed_and_rolled_back(
    tmp_path: Path, pki: Pki, enroller: Enroller, model_irs: dict[str, Path]
) -> None:
    async def scenario() -> dict[str, Any]:
        settings = {"fleet": {"poll_seconds": 60}, "gallery": {"heartbeat_seconds": 1}}
        async with serving(tmp_path, pki, enroller, **settings) as harness, client(harness) as http:
            old = {**FIELDS, "version": "fer2013", "precision": "FP16"}
            assert (
                await http.post("/api/models", data=old, files=model_files(model_irs[OLD]))
            ).status_code == 201
            published = await http.post(
                "/api/models", data={**FIELDS, "licence": "MIT"}, files=model_files(model_irs[NEW])
            )
            again = await http.post("/api/models", data=FIELDS, files=model_files(model_irs[NEW]))
            listed = (await http.get("/api/models", params={"task": "expression"})).json()["models"]
            stream = await watching(harness)
            started = await http.post("/api/rollouts", json={"model_id": NEW, "target": {"kind": "all"}})
            rollout_id = started.json()["rollout"]["rollout_id"]
            announced = await next_models(stream)
            states = [started.json()["rollout"]["state"]]
            for action, body in (("pause", None), ("resume", {"percent": None}), ("rollback", None)):
                changed = await http.post(f"/api/rollouts/{rollout_id}/{action}", json=body)
                assert changed.status_code == 200, changed.text
                states.append(changed.json()["state"])
            after_rollback = await next_models(stream)
            stream.cancel()
            shown = (await http.get(f"/api/rollouts/{rollout_id}")).json()
            retired = await http.post(f"/api/models/{NEW}/retire")
            return {
                "published": published,
                "again": again.json(),
                "listed": listed,
                "started": started.json(),
                "announced": announced,
                "states": states,
                "after_rollback": after_rollback,
                "shown": shown,
                "rollouts": (await http.get("/api/rollouts")).json()["rollouts"],
                "retired": retired.json(),
                "pause_rolled_back": problem(
                    await http.post(f"/api/rollouts/{rollout_id}/pause"), 409, "FAILED_PRECONDITION"
                ),
                "unknown_rollout": problem(await http.get("/api/rollouts/99"), 404, "NOT_FOUND"),
                "unknown_model": problem(
                    await http.post("/api/rollouts", json={"model_id": "no@such", "target": {"kind": "all"}}),
                    404,
                    "NOT_FOUND",
                ),
                "retired_model": problem(
                    await http.post("/api/rollouts", json={"model_id": NEW, "target": {"kind": "all"}}),
                    409,
                    "FAILED_PRECONDITION",
                ),
                "bad_target": problem(
                    await http.post(
                        "/api/rollouts", json={"model_id": NEW, "target": {"kind": "percent", "percent": 101}}
                    ),
                    400,
                    "INVALID_ARGUMENT",
                ),
                "audit": (await http.get("/api/audit")).json()["entries"],
            }

    r = run(scenario)
    assert r["published"].status_code == 201, r["published"].text
    model = r["published"].json()
    assert (model["model_id"], model["task"], model["precision"], model["licence"]) == (
        NEW,
        "expression",
        "FP32",
        "MIT",
    )
    assert sorted(f["name"] for f in model["files"]) == ["model.bin", "model.xml"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in model["files"])
    assert r["again"]["model_id"] == NEW and [m["model_id"] for m in r["listed"]] == [OLD, NEW]
    assert r["listed"][1] == model
    rollout = r["started"]["rollout"]
    assert (rollout["model_id"], rollout["target"], rollout["on_failures"]) == (
        NEW,
        {"kind": "all", "group": "", "percent": 0},
        "pause",
    )
    assert r["announced"] == [(NEW, rollout["rollout_id"])]
    assert r["states"] == ["active", "paused", "active", "rolled_back"]
    assert r["after_rollback"] == [(OLD, 0)]  # back to the version it ran before
    assert r["shown"]["rollout"]["state"] == "rolled_back"
    assert [d["device_id"] for d in r["shown"]["devices"]] == ["door-1"]
    assert [x["rollout_id"] for x in r["rollouts"]] == [rollout["rollout_id"]]
    # the list gives each rollout's agents per state, as its own page lists them one by one
    assert r["rollouts"][0]["device_counts"] == dict(Counter(d["state"] for d in r["shown"]["devices"]))
    assert r["retired"]["retired_at"] is not None
    assert "percent must be 1–100" in r["bad_target"]["detail"]
    assert [(e["action"], e["target"], e["outcome"]) for e in reversed(r["audit"])] == [
        ("models.publish", OLD, "ok"),
        ("models.publish", NEW, "ok"),
        ("models.publish", NEW, "ok"),
        ("rollouts.start", NEW, "ok"),
        ("rollouts.pause", str(rollout["rollout_id"]), "ok"),
        ("rollouts.resume", str(rollout["rollout_id"]), "ok"),
        ("rollouts.rollback", str(rollout["rollout_id"]), "ok"),
        ("models.retire", NEW, "ok"),
        ("rollouts.pause", str(rollout["rollout_id"]), "FAILED_PRECONDITION"),
        ("rollouts.start", "no@such", "NOT_FOUND"),
        ("rollouts.start", NEW, "FAILED_PRECONDITION"),
        ("rollouts.start", NEW, "INVALID_ARGUMENT"),
    ]


def upload(*files: tuple[str, bytes], fields: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "data": FIELDS if fields is None else fields,
        "files": [("files", (name, data, "application/octet-stream")) for name, data in files],
    }


def raw_multipart(data: bytes | None, *, fields_first: bool = False) -> dict[str, Any]:
    """A multipart body as httpx does not make it: the file (if any) before the form fields."""
    fields = [f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}'.encode() for k, v in FIELDS.items()]
    files = (
        []
        if data is None
        else [b'Content-Disposition: form-data; name="files"; filename="e.tflite"\r\n\r\n' + data]
    )
    parts = fields + files if fields_first else files + fields
    body = b"".join(b"--XyZ\r\n" + part + b"\r\n" for part in parts) + b"--XyZ--\r\n"
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=XyZ"}}


@pytest.mark.parametrize(
    ("case", "status", "code", "fragment"),
    [
        ("over the limit", 413, "RESOURCE_EXHAUSTED", "models.max_upload_bytes"),
        ("path parts", 400, "INVALID_ARGUMENT", "has path parts"),
        ("not a model", 400, "INVALID_ARGUMENT", "cannot publish mini-xception@fer2013-fp32"),
        ("empty file", 400, "INVALID_ARGUMENT", "were not sent (no bytes)"),
        ("half an IR pair", 400, "INVALID_ARGUMENT", "model.bin of mini-xception@fer2013-fp32 were not sent"),
        ("fields after files", 400, "INVALID_ARGUMENT", "missing (they come before the files)"),
        ("no fields", 400, "INVALID_ARGUMENT", "task, name, version missing"),
        ("no file", 400, "INVALID_ARGUMENT", "no model file"),
        ("unknown precision", 400, "INVALID_ARGUMENT", "precision 'FP8'"),
    ],
)
def test_bad_model_uploads_are_refused_and_leave_nothing(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    fer_tflite: Path,
    case: str,
    status: int,
    code: str,
    fragment: str,
) -> None:
    tflite = fer_tflite.read_bytes()
    requests = {
        "over the limit": upload(("emotion.tflite", tflite)),
        "path parts": upload(("../emotion.tflite", tflite)),
        "not a model": upload(("emotion.tflite", b"TFL3 but not really" * 100)),
        "empty file": upload(("emotion.tflite", b"")),
        "half an IR pair": upload(("model.xml", b"<net/>")),
        "fields after files": raw_multipart(tflite[:1000]),
        "no fields": upload(("emotion.tflite", tflite[:1000]), fields={}),
        "no file": raw_multipart(None, fields_first=True),
        "unknown precision": upload(("emotion.tflite", tflite[:1000]), fields={**FIELDS, "precision": "FP8"}),
    }
    assert len(tflite) > 64 * 1024

    async def scenario() -> tuple[dict[str, Any], list[Any], list[Path]]:
        async with serving(tmp_path, pki, enroller, models={"max_upload_bytes": 64 * 1024}) as harness:
            async with client(harness) as http:
                body = problem(await http.post("/api/models", **requests[case]), status, code)
                models = (await http.get("/api/models")).json()["models"]
            return body, models, stored_files(harness)

    body, models, files = run(scenario)
    assert fragment in body["detail"], body["detail"]
    assert str(tmp_path) not in body["detail"]
    assert (models, files) == ([], [])
