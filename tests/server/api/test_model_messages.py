"""Model-version messages to and from domain types: round trips, and malformed fields refused by name."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.models import ModelAssignment, ModelFile, ModelRelease, ModelStatus
from facefleet.server.api.wire import fleet as fleet_wire
from facefleet.server.rollouts.files import Chunk
from facefleet.v1 import fleet_pb2, models_pb2

WHEN = datetime(2026, 11, 23, 12, 0, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("state", ["downloading", "verifying", "active", "failed"])
def test_a_status_survives_the_round_trip(state: str) -> None:
    status = ModelStatus("embedding", "sface@2021dec-fp32", 7, state, "why", WHEN)  # type: ignore[arg-type]
    assert serde.status_from_proto(serde.status_to_proto(status), "s") == status


@pytest.mark.parametrize("final", [True, False])
def test_a_failure_says_whether_the_agent_tries_again(final: bool) -> None:
    status = ModelStatus("expression", "m@v", 7, "failed", "no space left", WHEN, final=final)
    message = serde.status_to_proto(status)
    assert message.retrying is not final
    assert serde.status_from_proto(message, "s").final is final


def test_a_status_without_time_keeps_none() -> None:
    message = models_pb2.ModelStatus(
        task="expression", model_id="m@v", state=models_pb2.MODEL_ACTIVATION_ACTIVE, time=Timestamp()
    )
    assert serde.status_from_proto(message, "s").time is None


@pytest.mark.parametrize(
    ("statuses", "message"),
    [
        ([], None),
        ([models_pb2.ModelStatus(task="expression", model_id="m@v")], r"statuses\[0\]: state is missing"),
        ([models_pb2.ModelStatus(task="expression", model_id="m", state=3)], r"statuses\[0\]: model id 'm'"),
        ([models_pb2.ModelStatus(task="expression", model_id="m@v", state=3)] * 17, "limit is 16"),
    ],
)
def test_malformed_reports_are_refused_naming_the_field(
    statuses: list[models_pb2.ModelStatus], message: str | None
) -> None:
    request = fleet_pb2.ReportModelStatusRequest(device_id="door-1", statuses=statuses)
    if message is None:
        assert fleet_wire.report_models_from_proto(request) == ((), {}, {}, ())
        return
    with pytest.raises(LinkError, match=message):
        fleet_wire.report_models_from_proto(request)


def test_an_assignment_carries_files_manifest_and_rollout() -> None:
    files = (ModelFile("model.bin", 10, "a" * 64), ModelFile("model.xml", 3, "b" * 64))
    assignment = ModelAssignment(
        (ModelRelease("expression", "m@v2", files, "{}", 4), ModelRelease("embedding", "sface@2021dec"))
    )
    message = serde.watch_update_to_proto(assignment).models
    assert [(r.task, r.model_id, r.rollout_id, r.manifest_json) for r in message.releases] == [
        ("expression", "m@v2", 4, "{}"),
        ("embedding", "sface@2021dec", 0, ""),
    ]
    assert [(f.name, f.size, f.sha256) for f in message.releases[0].files] == [
        (f.name, f.size, f.sha256) for f in files
    ]
    assert list(message.releases[1].files) == []


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"model_id": "m@v", "file": "model.bin", "offset": 5}, None),
        ({"model_id": "m", "file": "model.bin"}, "model id 'm'"),
        ({"model_id": "m@v", "file": ""}, "file must be"),
        ({"model_id": "m@v", "file": "x" * 200}, "file must be"),
    ],
)
def test_download_requests(request_fields: dict[str, object], message: str | None) -> None:
    request = fleet_pb2.DownloadModelRequest(device_id="door-1", **request_fields)  # type: ignore[arg-type]
    if message is None:
        assert fleet_wire.download_from_proto(request) == ("m@v", "model.bin", 5)
    else:
        with pytest.raises(LinkError, match=message):
            fleet_wire.download_from_proto(request)


def test_a_chunk() -> None:
    assert fleet_wire.chunk_to_proto(Chunk(b"abc", 3, 6)) == fleet_pb2.ModelChunk(
        data=b"abc", offset=3, size=6
    )
