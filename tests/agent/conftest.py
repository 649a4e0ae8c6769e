"""Fixtures for the agent's tests: a real mosquitto broker, an independent MQTT subscriber and an HTTP MJPEG
camera."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mjpeg import MjpegServer
from tests.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path).start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    """An MJPEG camera on a free loopback port; the test fills its streams."""
    server = MjpegServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stalls_end.set()
    server.shutdown()
    server.server_close()
    thread.join()


class Subscriber:
    """Records every message under a topic filter, as (topic, JSON payload or raw bytes, retained)."""

    def __init__(
        self, port: int, topic_filter: str, client_id: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.messages: list[tuple[str, Any, bool]] = []
        self.arrivals: list[float] = []  # time.time() of each message
        self.expiries: dict[str, int | None] = {}  # topic → the MQTT 5 message expiry of its last message
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_connect = lambda c, u, f, r, p: (c.subscribe(topic_filter, qos=1), self._ready.set())
        self.client.on_message = self._record
        self.client.reconnect_delay_set(1, 1)
        if tls is not None:
            self.client.tls_set_context(tls)
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 600  # the broker queues QoS 1 messages while this client is away
        self.client.connect("127.0.0.1", port, clean_start=False, properties=session)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber could not connect"
        time.sleep(0.2)

    def _record(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(message.payload)
        except ValueError:
            payload = bytes(message.payload)
        with self._lock:
            self.messages.append((message.topic, payload, bool(message.retain)))
            self.arrivals.append(time.time())
            self.expiries[message.topic] = getattr(message.properties, "MessageExpiryInterval", None)

    def on(self, topic: str) -> list[Any]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout} s; got {self.messages[-5:]}")
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()  # first, so that the network loop ends at once instead of at its next tick
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory() -> Iterator[Any]:
    made: list[Subscriber] = []

    def make(port: int, topic_filter: str = "#") -> Subscriber:
        subscriber = Subscriber(port, topic_filter, client_id=f"test-subscriber-{len(made)}")
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def tls_subscriber_factory() -> Iterator[Any]:
    """Subscribers over TLS: make(port, ca_file, topic_filter, cert_file, key_file), the last two for
    brokers that require a client certificate."""
    made: list[Subscriber] = []

    def make(
        port: int,
        ca_file: Path,
        topic_filter: str = "#",
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> Subscriber:
        context = ssl.create_default_context(cafile=str(ca_file))
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
        subscriber = Subscriber(port, topic_filter, client_id=f"test-tls-subscriber-{len(made)}", tls=context)
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        subscriber.close()
