"""MQTT link and outbox against a real mosquitto: status and last will, commands, credentials, and
at-least-once delivery across broker outages and agent restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from facefleet.agent.publish.mqtt import MAX_COMMAND_BYTES, MqttLink, MqttSettings
from facefleet.agent.publish.outbox import OutboxPublisher
from facefleet.agent.store.database import EmbeddingStore
from tests.mosquitto import Mosquitto

PREFIX = "facefleet/door-box/"


def settings(port: int, **changes: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "prefix": PREFIX,
        "client_id": "door-box",
        "reconnect_min_s": 1,
        "reconnect_max_s": 1,
    }
    values.update(changes)
    return MqttSettings(**values)


class Agent:
    """An MQTT link wired to an outbox publisher, as the service wires them."""

    def __init__(self, port: int, store: EmbeddingStore, **changes: Any) -> None:
        self.commands: list[tuple[str, bytes]] = []
        self.connections: list[tuple[bool, str]] = []
        self.outbox: OutboxPublisher
        self.link = MqttLink(
            settings(port, **changes),
            on_ack=lambda mid: self.outbox.acknowledged(mid),
            on_command=lambda topic, payload: self.commands.append((topic, payload)),
            on_connection=self._connection,
        )
        self.outbox = OutboxPublisher(
            store, lambda topic, payload, qos: self.link.publish(topic, payload, qos)
        )

    def _connection(self, up: bool, reason: str) -> None:
        self.connections.append((up, reason))
        self.outbox.connection_changed(up)

    def start(self) -> Agent:
        self.outbox.start()
        self.link.start()
        return self

    def stop(self) -> None:
        self.outbox.stop()
        self.link.stop()


def event(number: int) -> str:
    return json.dumps({"schema": 1, "event_id": f"event-{number:05d}", "n": number})


def test_status_is_retained_and_offline_on_a_clean_stop(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db")).start()
    agent.link.set_status({"schema": 1, "state": "online", "gallery_revision": 3})
    assert agent.link.wait_connected(10)
    late = subscriber_factory(broker.port, PREFIX + "status")
    late.wait_for(lambda: late.on(PREFIX + "status"))
    assert late.on(PREFIX + "status")[0]["state"] == "online"
    assert late.messages[0][2] is True  # retained
    agent.stop()
    late.wait_for(lambda: late.on(PREFIX + "status")[-1]["state"] == "offline")


@pytest.mark.slow
def test_last_will_marks_a_crashed_agent_offline(broker: Mosquitto, subscriber_factory: Any) -> None:
    watcher = subscriber_factory(broker.port, PREFIX + "status")
    script = textwrap.dedent(
        f"""
        import time
        from facefleet.agent.publish.mqtt import MqttLink, MqttSettings
        settings = MqttSettings(host="127.0.0.1", port={broker.port}, prefix="{PREFIX}", client_id="crashy")
        report = lambda up, why: print("up" if up else why, flush=True)
        link = MqttLink(settings, on_ack=print, on_command=print, on_connection=report)
        link.set_status({{"schema": 1, "state": "online"}})
        link.start()
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"up"
        watcher.wait_for(
            lambda: watcher.on(PREFIX + "status") and watcher.on(PREFIX + "status")[-1]["state"] == "online"
        )
    finally:
        process.kill()
        process.wait()
    watcher.wait_for(lambda: watcher.on(PREFIX + "status")[-1]["state"] == "offline")


def test_commands_arrive_by_subtopic_and_oversized_ones_are_dropped(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db")).start()
    try:
        assert agent.link.wait_connected(10)
        time.sleep(0.2)
        sender = subscriber_factory(broker.port, "unused/#")
        sender.client.publish(PREFIX + "cmd/verify", b'{"door": "front"}', qos=1)
        sender.client.publish(PREFIX + "cmd/verify", b"x" * (MAX_COMMAND_BYTES + 1), qos=1)
        sender.client.publish("facefleet/other-box/cmd/verify", b"{}", qos=1)
        sender.client.publish(PREFIX + "cmd/reload", b"{}", qos=1)
        deadline = time.monotonic() + 10
        while len(agent.commands) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        agent.stop()
    assert agent.commands == [("verify", b'{"door": "front"}'), ("reload", b"{}")]


def test_retained_commands_are_ignored_with_a_warning(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A retained command would be replayed, and executed, on every (re)connect."""
    sender = subscriber_factory(broker.port, "unused/#")
    stale = b'{"door": "front", "person_id": "ada", "request_id": "stale"}'
    sender.client.publish(PREFIX + "cmd/verify", stale, qos=1, retain=True).wait_for_publish(5)
    agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db")).start()
    try:
        assert agent.link.wait_connected(10)
        time.sleep(0.2)
        sender.client.publish(PREFIX + "cmd/verify", b'{"request_id": "live"}', qos=1, retain=True)
        deadline = time.monotonic() + 10
        while not agent.commands and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        agent.stop()
    assert agent.commands == [("verify", b'{"request_id": "live"}')]  # delivered live: not a replay
    assert any(
        "retained" in record.getMessage() and PREFIX + "cmd/verify" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.slow
def test_refused_credentials_are_reported(tmp_path: Path) -> None:
    secured = Mosquitto(tmp_path, users={"agent": "right"}).start()
    try:
        agent = Agent(secured.port, EmbeddingStore(tmp_path / "store.db"), username="agent", password="wrong")
        agent.start()
        deadline = time.monotonic() + 10
        while not agent.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        agent.stop()
        assert agent.connections and agent.connections[0][0] is False
        assert "Not authorized" in agent.connections[0][1] or "password" in agent.connections[0][1]
        good = Agent(
            secured.port, EmbeddingStore(tmp_path / "store2.db"), username="agent", password="right"
        ).start()
        assert good.link.wait_connected(10)
        good.stop()
    finally:
        secured.stop()


@pytest.mark.slow
def test_backlog_written_while_the_broker_is_down_is_delivered_in_order(
    tmp_path: Path, subscriber_factory: Any
) -> None:
    broker = Mosquitto(tmp_path)
    store = EmbeddingStore(tmp_path / "store.db")
    agent = Agent(broker.port, store).start()
    try:
        for number in range(300):
            agent.outbox.submit("events/face", event(number))
        assert store.outbox.count() == 300
        broker.start()
        watcher = subscriber_factory(broker.port, PREFIX + "events/#")
        assert agent.outbox.flush(30)
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "events/face")) >= 300)
    finally:
        agent.stop()
        broker.stop()
    numbers = [payload["n"] for payload in watcher.on(PREFIX + "events/face")]
    assert numbers == list(range(300))


@pytest.mark.slow
def test_broker_outage_mid_run_loses_nothing(tmp_path: Path, subscriber_factory: Any) -> None:
    broker = Mosquitto(tmp_path).start()
    store = EmbeddingStore(tmp_path / "store.db")
    watcher = subscriber_factory(broker.port, PREFIX + "events/#")
    agent = Agent(broker.port, store).start()
    stop = threading.Event()

    def produce() -> None:
        for number in range(600):
            agent.outbox.submit("events/face", event(number))
            time.sleep(0.004)
        stop.set()

    producer = threading.Thread(target=produce)
    try:
        assert agent.link.wait_connected(10)
        producer.start()
        time.sleep(0.6)
        broker.stop()
        time.sleep(1.0)
        broker.start()
        producer.join()
        assert agent.outbox.flush(30)
        watcher.wait_for(
            lambda: len({p["event_id"] for p in watcher.on(PREFIX + "events/face")}) >= 600, timeout=30
        )
    finally:
        agent.stop()
        broker.stop()
    received = [payload["event_id"] for payload in watcher.on(PREFIX + "events/face")]
    assert set(received) == {f"event-{n:05d}" for n in range(600)}
    assert store.outbox.count() == 0
    assert any(up is False for up, _ in agent.connections[1:])


def test_agent_restart_delivers_the_stored_backlog(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    path = tmp_path / "store.db"
    first = EmbeddingStore(path)
    for number in range(50):
        first.outbox.put("events/face", event(number))
    first.close()
    watcher = subscriber_factory(broker.port, PREFIX + "events/#")
    agent = Agent(broker.port, EmbeddingStore(path)).start()
    try:
        assert agent.outbox.flush(20)
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "events/face")) >= 50)
    finally:
        agent.stop()
    assert [p["n"] for p in watcher.on(PREFIX + "events/face")] == list(range(50))


@pytest.mark.slow
@pytest.mark.parametrize("window", [1, 8])
def test_window_bounds_unacknowledged_messages(broker: Mosquitto, tmp_path: Path, window: int) -> None:
    store = EmbeddingStore(tmp_path / "store.db")
    published: list[int] = []
    publisher = OutboxPublisher(
        store, lambda topic, payload, qos: published.append(len(published)) or len(published), window
    )
    publisher.start()
    publisher.connection_changed(True)
    for number in range(20):
        publisher.submit("events/face", event(number))
    time.sleep(0.5)
    assert len(published) == window
    for mid in range(1, window + 1):
        publisher.acknowledged(mid)
    time.sleep(0.5)
    publisher.stop()
    assert store.outbox.count() == 20 - window
    assert len(published) == 2 * window
