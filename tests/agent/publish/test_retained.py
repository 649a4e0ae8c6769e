"""Retained messages against a real mosquitto and a real store, driven as the frame loop drives them: what
an earlier run left retained and the config no longer has is removed after the next connect (cameras and
doors taken out, a prefix changed, discovery turned off, the discovery topics of agents that kept no record
of them), and no retained state or face crop goes on naming or showing a person erased meanwhile."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from facefleet.agent.publish.discovery import discovery_messages, former_discovery_topics
from facefleet.agent.publish.mqtt import MqttLink
from facefleet.agent.publish.retained import NO_ONE, CameraStates, RetainedMessages
from facefleet.agent.store.database import EmbeddingStore
from tests.agent.publish.test_mqtt import settings, wait_until
from tests.mosquitto import Mosquitto

PREFIX = "facefleet/door-box/"


class Run:
    """One run of the agent's retained messages for a config: its link, discovery and camera states."""

    def __init__(
        self,
        port: int,
        store: EmbeddingStore,
        cameras: list[str],
        doors: list[str],
        discovery_prefix: str = "homeassistant",
        prefix: str = PREFIX,
        former: list[str] | None = None,
    ) -> None:
        self.link = MqttLink(
            settings(port, prefix=prefix),
            on_ack=lambda mid: None,
            on_command=lambda name, payload: None,
            on_connection=lambda up, why: None,
        )
        discovery = []
        if discovery_prefix:
            discovery = discovery_messages(discovery_prefix, prefix, "door-box", "0.1", cameras, doors)
        topics = [f"{prefix}status", *(f"{prefix}cameras/{camera}/state" for camera in cameras)]
        self.retained = RetainedMessages(self.link, store.retained, discovery, topics, former or [])
        self.states = CameraStates(self.link, cameras)

    def start(self) -> Run:
        """Start, connect and publish what is retained, as the service does after each connect; return once
        the broker acknowledged every removal."""
        self.retained.start()
        self.link.start()
        assert self.link.wait_connected(10)
        self.announce()
        return self

    def announce(self) -> None:
        self.retained.announce()
        self.states.republish()
        wait_until(lambda: self.retained.settle() or not self.retained.stale)

    def stop(self) -> None:
        self.link.stop()


def retained(port: int, subscriber_factory: Any, expected: set[str]) -> dict[str, Any]:
    """Every retained message on the broker (topic → payload), once the `expected` topics arrived. One of
    them still on its way when the reader subscribed arrives as a live message (no retained flag): it
    counts, the latest of a topic winning."""
    reader = subscriber_factory(port, "#")

    def kept() -> dict[str, Any]:
        return {topic: payload for topic, payload, flag in reader.messages if flag or topic in expected}

    reader.wait_for(lambda: expected <= kept().keys())
    return kept()


def test_what_the_config_no_longer_has_is_removed_after_the_next_connect(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    store = EmbeddingStore(tmp_path / "store.db")
    first = Run(broker.port, store, ["front", "garage"], ["front"]).start()
    first.stop()
    assert len(retained(broker.port, subscriber_factory, {PREFIX + "status"})) == 3 * 2 + 1 + 2 + 1

    second = Run(broker.port, store, ["front"], ["main"]).start()  # garage and door front taken out
    second.stop()
    wanted = {
        topic
        for topic, _ in discovery_messages("homeassistant", PREFIX, "door-box", "0.1", ["front"], ["main"])
    }
    wanted |= {PREFIX + "cameras/front/state", PREFIX + "status"}
    assert set(retained(broker.port, subscriber_factory, wanted)) == wanted

    third = Run(broker.port, store, ["front"], [], discovery_prefix="", prefix="site/door-1/").start()
    third.stop()
    wanted = {"site/door-1/cameras/front/state", "site/door-1/status"}
    assert set(retained(broker.port, subscriber_factory, wanted)) == wanted
    assert store.retained.topics() == wanted


def test_the_first_run_that_keeps_a_record_removes_the_discovery_topics_agents_published_before(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    """Agents before this one published object ids without a hash, and kept no record of them."""
    earlier = [
        "homeassistant/sensor/facefleet_door-box_front_person/config",
        "homeassistant/sensor/facefleet_door-box_front_expression/config",
        "homeassistant/sensor/facefleet_door-box_front_faces/config",
        "homeassistant/sensor/facefleet_door-box_main_access/config",
    ]
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for topic in earlier:
        client.publish(topic, b'{"name": "an earlier entity"}', qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    assert set(retained(broker.port, subscriber_factory, set(earlier))) == set(earlier)

    former = former_discovery_topics("homeassistant", "door-box", ["front"], ["main"])
    run = Run(broker.port, EmbeddingStore(tmp_path / "store.db"), ["front"], ["main"], former=former).start()
    run.stop()
    now = retained(broker.port, subscriber_factory, {PREFIX + "cameras/front/state"})
    assert not set(earlier) & set(now)
    assert len([topic for topic in now if topic.startswith("homeassistant/")]) == 4


def test_after_an_outage_the_states_are_published_again_and_an_erased_person_is_named_and_shown_nowhere(
    tmp_path: Path, subscriber_factory: Any
) -> None:
    broker = Mosquitto(tmp_path).start()
    run = Run(broker.port, EmbeddingStore(tmp_path / "store.db"), ["front", "back"], []).start()
    state = PREFIX + "cameras/front/state"
    try:
        run.states.update("front", 1, "eileen", "happy")
        assert run.link.publish_latest("cameras/front/face", b"eileen's face", 600)
        run.states.face_published("front", "eileen")
        seen = retained(broker.port, subscriber_factory, {state, PREFIX + "cameras/front/face"})
        assert seen[state] == {"faces_in_view": 1, "last_person": "eileen", "expression": "happy"}
        broker.stop()
        wait_until(lambda: not run.link.connected)
        run.states.update("back", 2, None, "sad")  # while the broker is away
        run.states.forget_people({"bob"})  # eileen erased meanwhile
        broker.start()
        watcher = subscriber_factory(broker.port, "#")
        assert run.link.wait_connected(10)
        run.announce()  # what the service does after each connect
        back, face = PREFIX + "cameras/back/state", PREFIX + "cameras/front/face"
        watcher.wait_for(lambda: b"" in watcher.on(face))  # the crop removed
        later = retained(broker.port, subscriber_factory, {state, back})
        assert later[back] == {"faces_in_view": 2, "last_person": NO_ONE, "expression": "sad"}
        assert later[state] == {"faces_in_view": 1, "last_person": NO_ONE, "expression": "happy"}
        assert face not in later
    finally:
        run.stop()
        broker.stop()


def test_the_removal_of_an_erased_persons_crop_lost_with_its_connection_is_sent_again(
    tmp_path: Path, subscriber_factory: Any
) -> None:
    """The client accepted the removal, but the broker stalled and the connection was dropped before it was
    acknowledged: after the next connect it goes out again, and the crop is gone."""
    broker = Mosquitto(tmp_path).start()
    link = MqttLink(
        settings(broker.port, max_inflight=1),
        on_ack=lambda mid: None,
        on_command=lambda name, payload: None,
        on_connection=lambda up, why: None,
    )
    face = PREFIX + "cameras/front/face"
    try:
        link.start()
        assert link.wait_connected(10)
        assert link.publish_latest("cameras/front/face", b"eileen's face", 600)
        states = CameraStates(link, ["front"])
        states.face_published("front", "eileen")
        assert retained(broker.port, subscriber_factory, {face})[face] == b"eileen's face"
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)  # the broker stalls: nothing is acknowledged
        try:
            assert link.publish("events/face", b"{}", qos=1) is not None  # fills the window of 1
            states.forget_people(set())  # eileen erased: her crop's removal waits behind it
            link.drop_stalled_connection(0.0)  # as after three keep-alives without an acknowledgement
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        wait_until(lambda: not link.connected)
        assert link.wait_connected(10)
        watcher = subscriber_factory(broker.port, face)
        watcher.wait_for(lambda: watcher.on(face) == [b"eileen's face"])  # still there after the reconnect
        states.republish()  # what the frame loop does after each connect
        watcher.wait_for(lambda: b"" in watcher.on(face))  # the removal, sent again
    finally:
        link.stop()
        broker.stop()
