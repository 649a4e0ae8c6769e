"""The agent service end to end: real mosquitto, real models, cameras made of real photos."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facefleet.agent.commands import CLAIMS_PER_WINDOW, COMMAND_QUEUE_LIMIT
from facefleet.agent.config import load_config
from facefleet.agent.domain.records import Embedding, Person, PersonUpsert
from facefleet.agent.publish.discovery import SENSOR_KEYS, object_id
from facefleet.agent.publish.mqtt import MAX_COMMAND_BYTES
from facefleet.agent.service.loop import CAMERAS_STOP_S, AgentService
from facefleet.agent.store.database import EmbeddingStore
from facefleet.vision.models.store import ModelStore
from tests.mjpeg import MjpegServer, flat_jpeg
from tests.mosquitto import Mosquitto
from tests.tmpfs import fill, mounted_tmpfs
from tests.videos import write_video

pytestmark = pytest.mark.slow  # the service end to end: a broker, cameras in real time, one run as a process

PREFIX = "facefleet/door-box/"
SENSORS = [key for key, _, _ in SENSOR_KEYS]


@pytest.fixture
def state_dir(model_store: ModelStore, analyzer: Any, astronaut: np.ndarray, tmp_path: Path) -> Path:
    """A state directory with the default models and Eileen (the astronaut, group 'crew') enrolled."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (face,) = analyzer.analyze(astronaut)
    with EmbeddingStore(state / "agent.db") as store:
        store.gallery.apply_batch(
            [
                PersonUpsert(
                    Person("eileen", "Eileen C.", ("crew",)), (Embedding("sface@2021dec", face.embedding),)
                )
            ]
        )
    return state


def stranger(group_photo: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(group_photo[190:550, 380:660])


@contextlib.contextmanager
def running(service: AgentService) -> Iterator[AgentService]:
    """The service's run() on a thread for the duration, stopped and joined afterwards."""
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        yield service
    finally:
        service.stop_event.set()
        runner.join(30)


def config_file(tmp_path: Path, port: int, camera: str, source: Path, **door: Any) -> Path:
    door_lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in door.items())
    text = f"""
device_id = "door-box"
[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max_s = 1
[service]
status_interval_s = 1
[[cameras]]
name = "{camera}"
source = "{source}"
loop = {str(camera == "loop").lower()}
max_fps = 8
[[doors]]
name = "front"
camera = "{camera}"
min_frames = 3
{door_lines}"""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_service_publishes_identity_unknown_expression_and_door_decisions(
    state_dir: Path,
    astronaut: np.ndarray,
    group_photo: np.ndarray,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
) -> None:
    blank = np.full_like(astronaut, 40)
    frames = [astronaut] * 8 + [blank] * 14 + [stranger(group_photo)] * 8 + [blank] * 14
    video = write_video(tmp_path / "door.avi", frames, fps=8)
    config = config_file(
        tmp_path, broker.port, "door", video, allow_groups=["crew"], relay_topic="relay/front"
    )
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    notify_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify_socket.bind(str(notify_path))
    notify_socket.settimeout(120)  # the models compile first, slowly on a loaded machine
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    command = [
        str(Path(sys.executable).with_name("facefleet-agent")),
        "--config",
        str(config),
        "--state-dir",
        str(state_dir),
        "run",
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        while b"READY=1" not in notify_socket.recv(4096):  # a STATUS= may come first
            pass
        watcher.wait_for(
            lambda: len([e for e in watcher.on(PREFIX + "events/face") if e["event"] == "ended"]) >= 2,
            timeout=60,
        )
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "access/front")) >= 2, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        notify_socket.close()
    assert process.returncode == 0, stderr.decode()
    faces = watcher.on(PREFIX + "events/face")
    decided = [e for e in faces if e["event"] == "decided"]
    assert [e["identity"]["person_id"] for e in decided] == ["eileen", None]
    eileen, unknown = decided
    assert eileen["identity"] == {"status": "match", "person_id": "eileen", "name": "Eileen C."}
    assert eileen["expression"]["label"] == "happy" and eileen["score"] > 0.9
    assert unknown["identity"]["status"] == "unknown"
    for event in faces:
        assert event["schema"] == 1 and event["kind"] == "face" and event["time"].endswith("Z")
        assert event["models"]["embedding"] == "sface@2021dec" and event["gallery_revision"] == 1
    assert len({e["event_id"] for e in faces}) == len(faces)
    granted, denied = watcher.on(PREFIX + "access/front")[:2]
    assert (granted["decision"], granted["person_id"], granted["frames"]) == ("granted", "eileen", 3)
    assert (denied["decision"], denied["reason"]) == ("denied", "face not recognised")
    [relay] = watcher.on(PREFIX + "relay/front")
    assert (relay["action"], relay["door"], relay["event_id"]) == ("open", "front", granted["event_id"])
    opened, expires = (datetime.fromisoformat(relay[key]) for key in ("time", "expires_at"))
    assert expires - opened == timedelta(seconds=5)  # relay_expiry_s: not acted on later
    statuses = watcher.on(PREFIX + "status")
    assert statuses[0]["state"] == "online" and statuses[0]["cameras"]["door"]["state"] in (
        "running",
        "starting",
    )
    assert statuses[-1]["state"] == "offline"
    with EmbeddingStore(state_dir / "agent.db") as store:
        audit = store.audit.entries()
        assert {entry.decision for entry in audit} == {"granted", "denied"}
        assert store.outbox.count() == 0


def test_badge_claims_and_bad_commands(
    state_dir: Path, group_photo: np.ndarray, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "stranger.png"), stranger(group_photo))
    config = load_config(config_file(tmp_path, broker.port, "loop", folder, allow_people=["eileen"]))
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    service = AgentService(config, state_dir)
    with running(service):
        watcher.wait_for(lambda: watcher.on(PREFIX + "access/front"), timeout=30)  # the stranger is denied
        sender = watcher.client
        sender.publish(PREFIX + "cmd/verify", b"{not json", qos=1)
        sender.publish(
            PREFIX + "cmd/verify",
            json.dumps({"door": "front", "person_id": "eileen", "colour": "red"}),
            qos=1,
        )
        sender.publish(PREFIX + "cmd/verify", json.dumps({"door": "back", "person_id": "eileen"}), qos=1)
        sender.publish(
            PREFIX + "cmd/verify",
            json.dumps({"door": "front", "person_id": "mallory", "request_id": "r1"}),
            qos=1,
        )
        sender.publish(
            PREFIX + "cmd/verify",
            json.dumps({"door": "front", "person_id": "eileen", "request_id": "r2"}),
            qos=1,
        )
        watcher.wait_for(
            lambda: any(e.get("claim_id") == "r2" for e in watcher.on(PREFIX + "access/front")), timeout=30
        )
    replies = watcher.on(PREFIX + "replies/verify")
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert "malformed" in replies[0]["detail"] and "colour" in replies[1]["detail"]
    assert "unknown door 'back'" in replies[2]["detail"]
    assert replies[3]["request_id"] == "r1" and "'mallory' is not enrolled" in replies[3]["detail"]
    claims = {e["claim_id"]: e for e in watcher.on(PREFIX + "access/front") if e["mode"] == "claim"}
    assert "r1" not in claims  # refused before the door: no access event
    assert (
        claims["r2"]["decision"] == "denied"
        and claims["r2"]["reason"] == "face does not match the claimed person"
    )
    assert claims["r2"]["person_id"] == "eileen" and claims["r2"]["frames"] == 3
    assert any("malformed" in error for error in service.errors)


def blank_camera(tmp_path: Path) -> Path:
    """A looping camera that never shows a face, so badge claims stay pending."""
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "empty.png"), np.full((200, 200, 3), 50, np.uint8))
    return folder


def send(watcher: Any, command: str, body: dict[str, Any]) -> None:
    watcher.client.publish(f"{PREFIX}cmd/{command}", json.dumps(body), qos=1)


def blank_service(
    state_dir: Path, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> tuple[AgentService, Any]:
    """An agent service whose one camera ("loop") sees no face, and a watcher of everything it publishes
    (subscribed before the service starts)."""
    config = load_config(config_file(tmp_path, broker.port, "loop", blank_camera(tmp_path)))
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    return AgentService(config, state_dir), watcher


def test_every_refusal_keeps_a_readable_request_id_and_oversized_commands_are_answered(
    state_dir: Path, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    service, watcher = blank_service(state_dir, broker, subscriber_factory, tmp_path)
    with running(service):
        watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
        send(
            watcher,
            "verify",
            {"door": "front", "person_id": "eileen", "colour": "red", "request_id": "extra"},
        )
        send(watcher, "verify", {"door": "front", "person_id": "", "timeout_s": -1, "request_id": "values"})
        send(watcher, "verify", {"door": "back", "person_id": "eileen", "request_id": "door"})
        send(watcher, "reload", {"request_id": "command"})
        watcher.client.publish(PREFIX + "cmd/verify", b'{"request_id": "cut", ', qos=1)
        send(watcher, "verify", {"door": "front", "person_id": "x" * MAX_COMMAND_BYTES, "request_id": "huge"})
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "replies/verify")) >= 5, timeout=30)
        watcher.wait_for(lambda: watcher.on(PREFIX + "replies/reload"), timeout=30)
    replies = watcher.on(PREFIX + "replies/verify")
    assert not any(r["ok"] for r in replies) and len(replies) == 5
    by_id = {r["request_id"]: r["detail"] for r in replies if r["request_id"] is not None}
    assert sorted(by_id) == ["door", "extra", "values"]
    assert "colour" in by_id["extra"] and "person_id" in by_id["values"] and "timeout_s" in by_id["values"]
    assert "unknown door 'back'" in by_id["door"]
    unreadable = sorted(r["detail"] for r in replies if r["request_id"] is None)
    assert "malformed" in unreadable[1]
    assert f"over the {MAX_COMMAND_BYTES}-byte limit" in unreadable[0] and "request_id" in unreadable[0]
    (reload,) = watcher.on(PREFIX + "replies/reload")
    assert (reload["request_id"], reload["ok"]) == ("command", False) and "unknown command" in reload[
        "detail"
    ]


def test_a_command_whose_name_is_no_command_name_is_not_answered_and_holds_up_nothing(
    state_dir: Path, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    """Its reply topic would be built from the name: `replies/<name>` over MQTT's 65,535-byte topic limit
    cannot be published at all, and must not block the replies and events queued behind it."""
    service, watcher = blank_service(state_dir, broker, subscriber_factory, tmp_path)
    with running(service):
        watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
        longest = "x" * (65_535 - len(f"{PREFIX}cmd/".encode()))  # the command's topic: 65,535 bytes
        watcher.client.publish(f"{PREFIX}cmd/{longest}", b"{}", qos=1)
        watcher.client.publish(f"{PREFIX}cmd/{'y' * 40}", b"y" * (MAX_COMMAND_BYTES + 1), qos=1)  # oversized
        for name in ("Verify", "verify/now", "x" * 33):
            send(watcher, name, {"request_id": name})
        send(watcher, "verify", {"door": "front", "person_id": "eileen", "request_id": "after"})
        watcher.wait_for(lambda: watcher.on(PREFIX + "replies/verify"), timeout=30)
        watcher.wait_for(lambda: service.outbox.pending() == 0, timeout=10)
        errors, rejected = list(service.errors), service.store.outbox.rejected()
    replies = [topic for topic, _, _ in watcher.messages if topic.startswith(PREFIX + "replies/")]
    assert replies == [PREFIX + "replies/verify"]
    assert watcher.on(PREFIX + "replies/verify")[0]["request_id"] == "after"
    ignored = [e for e in errors if "ignored a command named" in e]
    assert len(ignored) == 5 and all(len(e) < 300 for e in ignored)  # the name cut in the log and status
    assert rejected == 0  # nothing was even queued


def test_a_repeated_request_id_is_not_executed_again_and_a_new_claim_supersedes_the_pending_one(
    state_dir: Path, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    service, watcher = blank_service(state_dir, broker, subscriber_factory, tmp_path)
    with running(service):
        watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
        for request_id in ("c1", "c2", "c1"):
            send(watcher, "verify", {"door": "front", "person_id": "eileen", "request_id": request_id})
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "replies/verify")) >= 3, timeout=30)
    watcher.wait_for(lambda: watcher.on(PREFIX + "status")[-1]["state"] == "offline")  # sent after the outbox
    replies = watcher.on(PREFIX + "replies/verify")
    assert [(r["request_id"], r["ok"]) for r in replies] == [("c1", True), ("c2", True), ("c1", False)]
    assert replies[2]["detail"].startswith("duplicate request_id 'c1'")
    (superseded,) = watcher.on(PREFIX + "access/front")  # c2 is still waiting for a face
    assert (superseded["claim_id"], superseded["decision"]) == ("c1", "denied")
    assert superseded["reason"] == "superseded by claim 'c2'"


def held_loop(service: AgentService, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """A gate the service's frame loop waits at, each round, until it is set (at most a minute)."""
    gate = threading.Event()
    apply_switches = service._apply_switches
    monkeypatch.setattr(service, "_apply_switches", lambda: (gate.wait(60), apply_switches()))
    return gate


def test_a_flood_of_commands_gets_a_reply_for_every_command(
    state_dir: Path,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, watcher = blank_service(state_dir, broker, subscriber_factory, tmp_path)
    gate = held_loop(service, monkeypatch)  # commands pile up as behind a slow frame
    runner = threading.Thread(target=service.run)
    runner.start()
    sent = [f"flood-{n:04d}" for n in range(COMMAND_QUEUE_LIMIT + 5)]

    def answered() -> list[Any]:
        return watcher.on(PREFIX + "replies/verify")

    try:
        watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
        for request_id in sent:
            send(watcher, "verify", {"door": "back", "person_id": "eileen", "request_id": request_id})
        watcher.wait_for(lambda: sum(r["detail"].startswith("busy") for r in answered()) >= 5, timeout=30)
        gate.set()
        watcher.wait_for(lambda: len(answered()) >= len(sent), timeout=60)
    finally:
        gate.set()
        service.stop_event.set()
        runner.join(30)
    replies = answered()
    assert sorted(r["request_id"] for r in replies) == sent
    busy = [r["request_id"] for r in replies if r["detail"].startswith("busy")]
    assert len(busy) == 5 and not any(r["ok"] for r in replies)


def test_a_claim_that_waited_for_the_frame_loop_past_its_timeout_is_refused_and_never_executed(
    state_dir: Path,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, watcher = blank_service(state_dir, broker, subscriber_factory, tmp_path)
    gate = held_loop(service, monkeypatch)  # the claim waits as behind a slow frame
    with running(service):
        try:
            watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
            claim = {"door": "front", "person_id": "eileen", "timeout_s": 0.5, "request_id": "late"}
            send(watcher, "verify", claim)
            watcher.wait_for(lambda: service.commands.waiting.qsize() == 1, timeout=30)
            time.sleep(0.6)  # past its timeout
        finally:
            gate.set()
        watcher.wait_for(lambda: watcher.on(PREFIX + "replies/verify"), timeout=30)
        send(watcher, "verify", {**claim, "request_id": "on-time"})  # the door still takes claims
        watcher.wait_for(lambda: watcher.on(PREFIX + "access/front"), timeout=30)
    late, on_time = watcher.on(PREFIX + "replies/verify")
    assert (late["request_id"], late["ok"]) == ("late", False) and late["detail"].startswith("expired: ")
    assert (on_time["request_id"], on_time["ok"]) == ("on-time", True)
    (denied,) = watcher.on(PREFIX + "access/front")  # the one claim taken, timed out with no face in view
    assert denied["claim_id"] == "on-time"


def test_claims_for_people_not_enrolled_or_past_a_doors_rate_are_refused_and_write_no_events(
    state_dir: Path,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flood of claims must not write an audit entry and an access event each (those would push the
    door's real events out of the bounded outbox): only the replies, under their own cap, are queued."""
    service, watcher = blank_service(state_dir, broker, subscriber_factory, tmp_path)
    gate = held_loop(service, monkeypatch)  # until every claim waits: one burst at the door
    eileens = [f"e{n}" for n in range(CLAIMS_PER_WINDOW + 2)]
    with running(service):
        try:
            watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
            for n in range(30):
                send(watcher, "verify", {"door": "front", "person_id": f"nobody-{n}", "request_id": f"s{n}"})
            send(watcher, "verify", {"door": "front", "person_id": "eileen c", "request_id": "spaced"})
            for request_id in eileens:
                send(watcher, "verify", {"door": "front", "person_id": "eileen", "request_id": request_id})
            watcher.wait_for(lambda: service.commands.waiting.qsize() == 31 + len(eileens), timeout=30)
            gate.set()
            watcher.wait_for(lambda: len(watcher.on(PREFIX + "replies/verify")) >= 31 + len(eileens))
            watcher.wait_for(lambda: len(watcher.on(PREFIX + "access/front")) >= CLAIMS_PER_WINDOW - 1)
            audit, status = service.store.audit.entries(1000), service.status()
        finally:
            gate.set()
    replies = {r["request_id"]: r for r in watcher.on(PREFIX + "replies/verify")}
    for n in range(30):
        assert not replies[f"s{n}"]["ok"] and f"'nobody-{n}' is not enrolled" in replies[f"s{n}"]["detail"]
    assert not replies["spaced"]["ok"] and "person_id" in replies["spaced"]["detail"]  # the id rule
    assert [replies[r]["ok"] for r in eileens] == [True] * CLAIMS_PER_WINDOW + [False, False]
    assert all(replies[r]["detail"].startswith("busy: 'front' took") for r in eileens[-2:])
    assert status["commands"] == {"claims_over_rate": 2}
    access = watcher.on(PREFIX + "access/front")  # each claim the door took ended the one before it
    assert [(e["claim_id"], e["person_id"]) for e in access] == [(r, "eileen") for r in eileens[:9]]
    assert [(a.person_id, a.details["reason"]) for a in audit] == [
        ("eileen", f"superseded by claim {r!r}") for r in reversed(eileens[1:10])
    ]


def test_refused_claims_take_at_most_a_tenth_of_a_small_outbox_while_the_broker_is_away(
    state_dir: Path,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = config_file(tmp_path, broker.port, "loop", blank_camera(tmp_path))
    path.write_text(
        path.read_text().replace("reconnect_max_s = 1\n", "reconnect_max_s = 1\noutbox_limit = 50\n")
    )
    service = AgentService(load_config(path), state_dir)
    gate, executed = held_loop(service, monkeypatch), threading.Event()  # until every command waits
    execute = service.commands.execute_waiting
    monkeypatch.setattr(
        service.commands, "execute_waiting", lambda: (execute(), gate.is_set() and executed.set())
    )
    watcher = subscriber_factory(broker.port, PREFIX + "status")
    with running(service):
        try:
            watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
            for request_id in ("e0", "e1"):  # the second ends the first: a real access event
                send(watcher, "verify", {"door": "front", "person_id": "eileen", "request_id": request_id})
            for n in range(60):
                send(watcher, "verify", {"door": "front", "person_id": f"nobody-{n}", "request_id": f"s{n}"})
            watcher.wait_for(lambda: service.commands.waiting.qsize() == 62, timeout=30)
            broker.stop()
            gate.set()
            assert executed.wait(30)
            queued = [m.topic for m in service.store.outbox.pending(100)]
            dropped = service.store.outbox.dropped()
        finally:
            gate.set()
    assert queued.count("access/front") == 1 and dropped == 0
    assert queued.count("replies/verify") == 5  # a tenth of outbox_limit: e0's, e1's and three refusals


def test_home_assistant_discovery_and_what_a_changed_config_no_longer_has_is_removed(
    state_dir: Path, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    path = config_file(tmp_path, broker.port, "loop", blank_camera(tmp_path))
    watcher = subscriber_factory(broker.port, "#")
    with running(AgentService(load_config(path), state_dir)):
        watcher.wait_for(lambda: watcher.on(PREFIX + "cameras/loop/state"), timeout=30)
        watcher.wait_for(
            lambda: len([t for t, _, _ in watcher.messages if t.startswith("homeassistant/")]) >= 4
        )
    person = watcher.on(f"homeassistant/sensor/{object_id('door-box', 'loop', 'person')}/config")[0]
    assert person["state_topic"] == PREFIX + "cameras/loop/state"
    assert person["availability"][0]["topic"] == PREFIX + "status"
    door = watcher.on(f"homeassistant/sensor/{object_id('door-box', 'front', 'access')}/config")[0]
    assert door["state_topic"] == PREFIX + "access/front"
    first = {topic for topic, payload, _ in watcher.messages if payload != b""}

    # camera "loop" and door "front" taken out, camera "yard" and door "side" put in
    path.write_text(path.read_text().replace('"loop"', '"yard"').replace('name = "front"', 'name = "side"'))
    with running(AgentService(load_config(path), state_dir)):
        gone = first - {PREFIX + "status"}
        watcher.wait_for(lambda: all(b"" in watcher.on(topic) for topic in gone), timeout=30)
    later = subscriber_factory(broker.port, "#")
    later.wait_for(lambda: later.on(PREFIX + "cameras/yard/state"))
    kept = {topic for topic, _, retained in later.messages if retained}
    assert len(gone) == 5 and not kept & gone
    assert kept == {
        PREFIX + "status",
        PREFIX + "cameras/yard/state",
        *(f"homeassistant/sensor/{object_id('door-box', 'yard', key)}/config" for key in SENSORS),
        f"homeassistant/sensor/{object_id('door-box', 'side', 'access')}/config",
    }


def test_a_camera_state_changed_while_the_broker_is_away_reaches_it_and_names_no_erased_person(
    state_dir: Path, astronaut: np.ndarray, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "eileen.png"), astronaut)
    service = AgentService(load_config(config_file(tmp_path, broker.port, "loop", folder)), state_dir)
    state = PREFIX + "cameras/loop/state"
    watcher = subscriber_factory(broker.port, state)
    with running(service):
        watcher.wait_for(lambda: any(s["last_person"] == "eileen" for s in watcher.on(state)), timeout=30)
        broker.stop()
        deadline = time.monotonic() + 30
        while service.link is not None and service.link.connected:
            assert time.monotonic() < deadline, "the agent did not see the broker go"
            time.sleep(0.05)
        service.store.gallery.delete_person("eileen")  # erased while the broker is away
        while "eileen" in service.people:  # the frame loop took the gallery without her
            assert time.monotonic() < deadline, "the gallery was not refreshed"
            time.sleep(0.05)
        broker.start()
        later = subscriber_factory(broker.port, state)
        later.wait_for(lambda: later.on(state) and later.on(state)[-1]["last_person"] == "none", timeout=30)
    assert later.on(state)[-1]["faces_in_view"] == 1  # she is still in view, recognised no more


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root to mount), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small-disk", "4m") as mount_point:
        yield mount_point


def test_a_full_disk_is_reported_and_the_service_keeps_running(
    state_dir: Path,
    astronaut: np.ndarray,
    broker: Mosquitto,
    subscriber_factory: Any,
    tmp_path: Path,
    small_disk: Path,
) -> None:
    (small_disk / "models").symlink_to((state_dir / "models").resolve(), target_is_directory=True)
    shutil.copy(state_dir / "agent.db", small_disk / "agent.db")
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "eileen.png"), astronaut)
    config = load_config(config_file(tmp_path, broker.port, "loop", folder, allow_groups=["crew"]))
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    service = AgentService(config, small_disk)
    runner = threading.Thread(target=service.run)
    runner.start()

    def verify(request_id: str) -> None:
        command = {"door": "front", "person_id": "eileen", "request_id": request_id}
        watcher.client.publish(PREFIX + "cmd/verify", json.dumps(command), qos=1)

    try:
        watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
        filler = fill(small_disk)
        for attempt in range(5):
            verify(f"full-{attempt}")
        watcher.wait_for(lambda: any("disk is full" in e for e in service.errors), timeout=30)
        analysed = service.frames_analysed["loop"]
        watcher.wait_for(lambda: service.frames_analysed["loop"] > analysed + 5, timeout=30)
        filler.unlink()
        verify("after")
        watcher.wait_for(
            lambda: any(r["request_id"] == "after" for r in watcher.on(PREFIX + "replies/verify")), timeout=30
        )
    finally:
        service.stop_event.set()
        runner.join(30)
    assert not runner.is_alive()
    with EmbeddingStore(small_disk / "agent.db") as store:
        assert [p.person_id for p in store.gallery.people()] == ["eileen"]  # nothing stored before was lost
        assert store.integrity_check() == []


def test_a_stop_request_takes_no_lock_and_stops_the_service(
    state_dir: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    """SIGTERM's handler runs on the main thread, which may be inside stop_event.wait() holding the event's
    lock: a handler that needs that lock deadlocks the agent, which then ignores every SIGTERM."""
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "empty.png"), np.full((200, 200, 3), 50, np.uint8))
    service = AgentService(load_config(config_file(tmp_path, broker.port, "loop", folder)), state_dir)
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        with service.stop_event._cond:  # as the main thread holds it inside stop_event.wait()
            handler = threading.Thread(target=service.request_stop)
            handler.start()
            handler.join(5)
            assert not handler.is_alive(), "the stop request waited for the stop event's lock"
        runner.join(30)
        assert not runner.is_alive()
        assert service.stop_event.is_set()
    finally:
        service.stop_event.set()
        runner.join(30)


def test_an_agent_stopped_with_cameras_stalled_inside_a_read_waits_for_them_once_and_exits_cleanly(
    state_dir: Path, mjpeg_server: MjpegServer, tmp_path: Path
) -> None:
    """Streams that stop halfway through a frame hold their cameras inside a read for their timeout_s: the
    agent waits CAMERAS_STOP_S for them all together (not each: within systemd's TimeoutStopSec even with
    many cameras), and a read that returns after that, while the process ends, must not abort it (its thread
    would be unwound through OpenCV's native code)."""
    mjpeg_server.streams["door"] = [flat_jpeg(64, 48)]
    mjpeg_server.stall_after = 3
    mjpeg_server.release_spacing_s = 0.015  # the reads end one by one over the 0.1 s after the shutdown
    cameras = "".join(
        f'[[cameras]]\nname = "cam{i}"\nsource = "{mjpeg_server.url("door")}"\ntimeout_s = 30\n'
        for i in range(8)
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        "[mqtt]\nenabled = false\n[metrics]\nlisten = ''\n[service]\npipeline = 'off'\n"
        f"[runtime]\ninference_precision = 'f32'\n{cameras}"
    )
    agent = str(Path(sys.executable).with_name("facefleet-agent"))
    command = [agent, "-v", "--config", str(config), "--state-dir", str(state_dir), "run"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()

    def wait_for_lines(predicate: Any, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len([line for line in list(lines) if predicate(line)]) < count:
            if process.poll() is not None:  # it may have exited just after writing them
                reader.join(10)
                assert len([line for line in lines if predicate(line)]) >= count, "".join(lines)
                return
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.01)

    try:
        wait_for_lines(lambda line: "reading http://" in line, 8)
        time.sleep(0.5)  # the frame after the third is cut off halfway: each camera waits inside its read
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        wait_for_lines(lambda line: "still inside a read at shutdown" in line, 1)
        mjpeg_server.stalls_end.set()
        process.wait(timeout=30)
        took = time.monotonic() - stopping
    finally:
        process.kill()
        process.wait()
        reader.join(10)
    assert process.returncode == 0, "".join(lines)
    assert CAMERAS_STOP_S <= took < CAMERAS_STOP_S + 3


def test_a_grant_while_the_broker_is_away_never_opens_the_door_later(
    state_dir: Path, astronaut: np.ndarray, broker: Mosquitto, subscriber_factory: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "eileen.png"), astronaut)
    config = load_config(
        config_file(tmp_path, broker.port, "loop", folder, allow_people=["eileen"], relay_topic="relay/front")
    )
    watcher = subscriber_factory(broker.port, PREFIX + "#")  # its session outlives the outage
    broker.stop()
    service = AgentService(config, state_dir)
    with running(service):
        deadline = time.monotonic() + 30
        while not service.store.audit.entries():  # granted while no broker is there
            assert time.monotonic() < deadline, "no door decision"
            time.sleep(0.1)
        [first] = service.store.audit.entries()[:1]
        broker.start()
        watcher.wait_for(lambda: watcher.on(PREFIX + "access/front"), timeout=30)  # the queued event
        assert service.outbox.flush(10)
        time.sleep(1.0)
        unsent = service.metrics.relay_unsent.labels("front")._value.get()
    granted = first.details["event_id"]
    assert first.decision == "granted"
    assert watcher.on(PREFIX + "access/front")[0]["event_id"] == granted
    # the open of that grant was not queued, so never replayed (a later grant of the same face may open)
    assert [relay for relay in watcher.on(PREFIX + "relay/front") if relay["event_id"] == granted] == []
    assert unsent >= 1


def test_sighup_leaves_the_agent_running_and_says_what_is_reread(state_dir: Path, tmp_path: Path) -> None:
    """SIGHUP (e.g. a reload sent to every service after renewing certificates) must not stop the agent and
    its doors: it logs what it rereads and when, and SIGTERM still stops it cleanly."""
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "empty.png"), np.full((200, 200, 3), 50, np.uint8))
    config = tmp_path / "agent.toml"
    config.write_text(
        "[mqtt]\nenabled = false\n[metrics]\nlisten = ''\n[service]\npipeline = 'off'\n"
        f"[[cameras]]\nname = 'door'\nsource = '{folder}'\nloop = true\nmax_fps = 5\n"
    )
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(str(notify_path))
        notify_socket.settimeout(120)
        agent = str(Path(sys.executable).with_name("facefleet-agent"))
        command = [agent, "--config", str(config), "--state-dir", str(state_dir), "run"]
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            while b"READY=1" not in notify_socket.recv(4096):
                pass
            process.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            assert process.poll() is None, "SIGHUP stopped the agent"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr
    assert "SIGHUP: the agent goes on; its connections to the server and to the broker reread" in stderr
