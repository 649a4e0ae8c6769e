"""Messages of a newer peer, built at the proto level with values this release does not know (a task, a
precision, an enum value): the decoders leave out only those entries, with a note, and keep the rest."""

from __future__ import annotations

import pytest

from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.fleet import Welcome
from facefleet.link.models import ModelStatus
from facefleet.v1 import events_pb2, fleet_pb2, models_pb2

SHA = "a" * 64
FUTURE_TASK = "pose"  # a task this release does not know


def release(task: str, model_id: str, rollout_id: int = 0) -> models_pb2.ModelRelease:
    return models_pb2.ModelRelease(
        task=task,
        model_id=model_id,
        files=[models_pb2.ModelFile(name="model.bin", size=10, sha256=SHA)],
        manifest_json="{}",
        rollout_id=rollout_id,
    )


def test_a_release_of_an_unknown_task_is_set_apart_and_the_others_are_kept() -> None:
    message = fleet_pb2.WatchResponse(
        models=models_pb2.ModelAssignment(
            releases=[
                release("expression", "mini-xception@fer2013", 3),
                release(FUTURE_TASK, "hopenet@v2", 4),
            ]
        )
    )
    assignment = serde.watch_update_from_proto(message)
    assert assignment is not None and not isinstance(assignment, (serde.GalleryDelta, serde.Heartbeat))
    assert [(r.task, r.model_id) for r in assignment.releases] == [("expression", "mini-xception@fer2013")]
    (unsupported,) = assignment.unsupported
    assert (unsupported.task, unsupported.model_id, unsupported.rollout_id) == (FUTURE_TASK, "hopenet@v2", 4)
    refusal = unsupported.refusal("0.1.0")
    assert "does not know the task 'pose'" in refusal and "upgrade the agent" in refusal


def test_an_agent_can_report_a_release_of_a_task_it_does_not_know_as_failed() -> None:
    status = ModelStatus(FUTURE_TASK, "hopenet@v2", 4, "failed", "upgrade the agent")
    message = serde.status_to_proto(status)
    assert (message.task, message.state) == (FUTURE_TASK, models_pb2.MODEL_ACTIVATION_FAILED)
    with pytest.raises(LinkError, match="not a task name"):
        ModelStatus("Pose Estimation", "hopenet@v2", 4, "failed")


def test_a_registration_leaves_out_what_a_newer_agent_sent_and_keeps_the_rest() -> None:
    request = fleet_pb2.RegisterRequest(
        device_id="door-1",
        agent_version="9.0.0",
        model_versions={"embedding": "sface@2021dec", FUTURE_TASK: "hopenet@v2"},
        model_precisions={"embedding": "bf16", "detection": "int4", FUTURE_TASK: "f32"},
        model_statuses=[
            models_pb2.ModelStatus(task="expression", model_id="mini-xception@fer2013", state=5),
            models_pb2.ModelStatus(task=FUTURE_TASK, model_id="hopenet@v2", state=3),
            models_pb2.ModelStatus(task="embedding", model_id="sface@2021dec", state=3),
        ],
    )
    registration, ignored = serde.registration_from_proto(request, "door-1")
    assert dict(registration.model_versions) == {"embedding": "sface@2021dec"}
    assert dict(registration.model_precisions) == {"embedding": "bf16"}
    assert [(s.task, s.state) for s in registration.model_statuses] == [("embedding", "active")]
    assert sorted(ignored) == [  # a map's entries come in no set order
        "model_precisions['detection']: precision 'int4'",
        "model_precisions['pose']: task 'pose'",
        "model_statuses[0]: state 5 (mini-xception@fer2013)",
        "model_statuses[1]: task 'pose' (hopenet@v2)",
        "model_versions['pose']: task 'pose'",
    ]


def test_a_status_without_a_state_is_still_malformed() -> None:
    request = fleet_pb2.RegisterRequest(
        device_id="door-1",
        model_statuses=[models_pb2.ModelStatus(task="embedding", model_id="sface@2021dec")],
    )
    with pytest.raises(LinkError, match=r"model_statuses\[0\]: state is missing or unknown"):
        serde.registration_from_proto(request, "door-1")


@pytest.mark.parametrize(
    ("kind", "decision", "newer"),
    [
        (events_pb2.EVENT_KIND_FACE, events_pb2.DECISION_MATCH, None),
        (3, events_pb2.DECISION_UNKNOWN, "kind 3"),
        (events_pb2.EVENT_KIND_FACE, 7, "decision 7"),
        (3, 7, "kind 3 and decision 7"),
        (events_pb2.EVENT_KIND_UNSPECIFIED, events_pb2.DECISION_MATCH, None),  # malformed, not newer
    ],
)
def test_an_events_kind_or_decision_of_a_newer_agent_is_named(
    kind: int, decision: int, newer: str | None
) -> None:
    message = events_pb2.Event(event_id="e1", kind=kind, decision=decision)  # type: ignore[arg-type]
    assert serde.newer_event_values(message) == newer


def test_the_server_version_crosses_register_and_an_older_server_says_none() -> None:
    welcome = Welcome(3, "g", (), 100, 30, server_version="0.2.0")
    assert serde.welcome_from_proto(serde.welcome_to_proto(welcome)).server_version == "0.2.0"
    assert serde.welcome_from_proto(fleet_pb2.RegisterResponse()).server_version == ""
