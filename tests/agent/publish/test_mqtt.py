"""MQTT link and outbox against a real mosquitto: status and last will, commands, credentials,
at-least-once delivery across broker outages and agent restarts, and TLS with server and client
certificates from the site CA."""

from __future__ import annotations

import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from facefleet.agent.config import MqttConfig, load_config
from facefleet.agent.domain.records import StoreError
from facefleet.agent.publish.mqtt import MAX_COMMAND_BYTES, MqttLink, MqttSettings
from facefleet.agent.publish.outbox import RETRY_FIRST_S, OutboxPublisher, back_off
from facefleet.agent.service.loop import AgentService
from facefleet.agent.service.wiring import mqtt_settings
from facefleet.agent.store.database import EmbeddingStore
from facefleet.server.api import certs
from facefleet.vision.models.store import ModelStore
from tests.mosquitto import BrokerTls, Mosquitto

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
    """An MQTT link wired to an outbox publisher, as the service wires them. ack_timeout_s: how long the
    oldest message in flight may wait for its PUBACK before the connection is made again."""

    def __init__(
        self, port: int, store: EmbeddingStore, ack_timeout_s: float | None = None, **changes: Any
    ) -> None:
        self.commands: list[tuple[str, bytes]] = []
        self.connections: list[tuple[bool, str]] = []
        self.errors: list[str] = []
        self.outbox: OutboxPublisher
        self.link = MqttLink(
            settings(port, **changes),
            on_ack=lambda mid: self.outbox.acknowledged(mid),
            on_command=lambda topic, payload: self.commands.append((topic, payload)),
            on_connection=self._connection,
            on_refused=lambda mid, reason, permanent: self.outbox.refused(mid, reason, permanent),
            on_error=self.errors.append,
        )
        self.outbox = OutboxPublisher(
            store,
            lambda topic, payload, qos: self.link.publish(topic, payload, qos),
            ack_timeout_s=ack_timeout_s,
            stalled=self.link.drop_stalled_connection,
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
    early = subscriber_factory(broker.port, PREFIX + "status")
    early.wait_for(lambda: early.on(PREFIX + "status"))  # the broker holds the status now
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


def wait_for_commands(agent: Agent, count: int) -> None:
    """Until `count` commands arrived (10 s at most), then a little longer for any that should not."""
    deadline = time.monotonic() + 10
    while len(agent.commands) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)


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
        wait_for_commands(agent, 2)
    finally:
        agent.stop()
    assert agent.commands == [("verify", b'{"door": "front"}'), ("reload", b"{}")]
    assert agent.errors == []  # the subscription was granted


def test_commands_sent_while_the_agent_is_away_are_never_executed_late(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    """The agent's session ends with its connection: the broker keeps no badge claim for it to run later."""
    store = EmbeddingStore(tmp_path / "store.db")
    first = Agent(broker.port, store).start()
    sender = subscriber_factory(broker.port, "unused/#")
    try:
        assert first.link.wait_connected(10)
        time.sleep(0.2)
        sender.client.publish(PREFIX + "cmd/verify", b'{"request_id": "before"}', qos=1)
        wait_for_commands(first, 1)
    finally:
        first.stop()
    sender.client.publish(PREFIX + "cmd/verify", b'{"request_id": "away"}', qos=1).wait_for_publish(5)
    again = Agent(broker.port, store).start()  # the same client id
    try:
        assert again.link.wait_connected(10)
        time.sleep(0.2)
        sender.client.publish(PREFIX + "cmd/verify", b'{"request_id": "after"}', qos=1)
        wait_for_commands(again, 1)
    finally:
        again.stop()
    assert first.commands == [("verify", b'{"request_id": "before"}')]
    assert again.commands == [("verify", b'{"request_id": "after"}')]


def dynamic_security_plugin() -> Path | None:
    """mosquitto's dynamic security plugin (Debian's mosquitto package ships it), if installed."""
    candidates = [*Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")]
    candidates.append(Path("/usr/lib/mosquitto_dynamic_security.so"))
    return next((path for path in candidates if path.exists()), None)


def test_a_refused_command_subscription_is_an_error_naming_the_topic_and_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto's ACL file grants every subscription and filters at delivery; its dynamic security plugin
    refuses one its roles do not allow, in the SUBACK."""
    plugin = dynamic_security_plugin()
    if plugin is None:
        pytest.skip("mosquitto's dynamic security plugin is not installed")
    broker = Mosquitto(tmp_path)
    subscribe_nothing = {"publishClientSend": True, "publishClientReceive": True, "subscribe": False}
    dynsec = tmp_path / "dynamic-security.json"
    dynsec.write_text(
        json.dumps({"defaultACLAccess": subscribe_nothing, "clients": [], "groups": [], "roles": []})
    )
    broker.config.write_text(
        broker.config.read_text() + f"plugin {plugin}\nplugin_opt_config_file {dynsec}\n"
    )
    broker.start()
    agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db")).start()
    try:
        wait_until(lambda: agent.errors)
    finally:
        agent.stop()
        broker.stop()
    (error,) = agent.errors
    assert f"refused the subscription to {PREFIX}cmd/#" in error and "(Not authorized)" in error
    assert "in the broker's ACL" in error
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [error]


def test_the_broker_keeps_messages_over_the_packet_limit_from_the_agent(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    """A command over MAX_COMMAND_BYTES but within the packet limit arrives and is refused by size; one of
    1 MiB never reaches the agent (the broker drops it), and the connection stays up for the next."""
    oversized: list[tuple[str, int]] = []
    agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db"))
    agent.link._on_oversized = lambda name, size: oversized.append((name, size))
    agent.start()
    try:
        assert agent.link.wait_connected(10)
        time.sleep(0.2)
        sender = subscriber_factory(broker.port, "unused/#")
        sender.client.publish(PREFIX + "cmd/verify", b"x" * (MAX_COMMAND_BYTES + 1), qos=1)
        sender.client.publish(PREFIX + "cmd/enrol", b"x" * (1024 * 1024), qos=1)
        sender.client.publish(PREFIX + "cmd/reload", b"{}", qos=1)
        wait_for_commands(agent, 1)
    finally:
        agent.stop()
    assert oversized == [("verify", MAX_COMMAND_BYTES + 1)]
    assert agent.commands == [("reload", b"{}")]
    assert [up for up, _ in agent.connections] == [True, False]  # down once: by stop()


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
        wait_for_commands(agent, 1)
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


# ---- TLS ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A site CA (tls_dir/ca.pem), the broker's certificate for 127.0.0.1 and localhost, and client
    certificates for the agent (CN door-box) and the test's subscriber (CN watcher)."""

    tls_dir: Path
    server: certs.Issued
    device: certs.Issued
    watcher: certs.Issued

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    def broker(
        self, workdir: Path, require_certificate: bool = False, server: certs.Issued | None = None
    ) -> Mosquitto:
        server = server or self.server
        workdir.mkdir()
        tls = BrokerTls(self.ca, server.cert, server.key, require_certificate)
        return Mosquitto(workdir, tls=tls).start()


def make_site(tls_dir: Path) -> Site:
    certs.init_ca(tls_dir, server_names=["127.0.0.1", "localhost"])
    server = certs.Issued(tls_dir / "server.pem", tls_dir / "server.key")
    return Site(
        tls_dir, server, certs.issue_device(tls_dir, "door-box"), certs.issue_device(tls_dir, "watcher")
    )


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path / "site")


def wait_for_connection_report(agent: Agent, timeout: float = 10.0) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    while not agent.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert agent.connections, "the link reported neither a connection nor a failure"
    return agent.connections[0]


def test_tls_with_the_site_ca_carries_events_and_the_retained_status(
    site: Site, tmp_path: Path, tls_subscriber_factory: Any
) -> None:
    broker = site.broker(tmp_path / "broker")
    try:
        watcher = tls_subscriber_factory(broker.port, site.ca, PREFIX + "events/#")
        agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db"), tls=True, ca_file=site.ca)
        agent.start()
        try:
            agent.link.set_status({"schema": 1, "state": "online"})
            assert agent.link.wait_connected(10), agent.connections
            agent.outbox.submit("events/face", event(1))
            assert agent.outbox.flush(10)
            watcher.wait_for(lambda: watcher.on(PREFIX + "events/face"))
            late = tls_subscriber_factory(broker.port, site.ca, PREFIX + "status")
            late.wait_for(lambda: late.on(PREFIX + "status"))
        finally:
            agent.stop()
        assert watcher.on(PREFIX + "events/face") == [json.loads(event(1))]
        assert late.messages[0][1]["state"] == "online" and late.messages[0][2] is True  # retained
        late.wait_for(lambda: late.on(PREFIX + "status")[-1]["state"] == "offline")
        # The listener speaks only TLS: the same agent without it gets no MQTT session there.
        plain = Agent(broker.port, EmbeddingStore(tmp_path / "plain.db"), client_id="plain-box").start()
        up, _ = wait_for_connection_report(plain)
        plain.stop()
        assert up is False
    finally:
        broker.stop()


def another_ca(tmp_path: Path, site: Site) -> certs.Issued:
    """A broker certificate for 127.0.0.1 from a CA the agent does not trust."""
    certs.init_ca(tmp_path / "other", server_names=["127.0.0.1", "localhost"])
    return certs.Issued(tmp_path / "other" / "server.pem", tmp_path / "other" / "server.key")


def localhost_only(tmp_path: Path, site: Site) -> certs.Issued:
    """A broker certificate from the site CA, for a name other than the address the agent dials."""
    tls_dir = tmp_path / "named"
    tls_dir.mkdir()
    for name in ("ca.pem", "ca.key"):
        shutil.copy(site.tls_dir / name, tls_dir / name)
    return certs.issue_server(tls_dir, ["localhost"])


@pytest.mark.parametrize(
    ("broker_certificate", "why"),
    [
        (another_ca, "unable to get local issuer certificate"),
        (localhost_only, "mismatch, certificate is not valid for '127.0.0.1'"),
    ],
    ids=["another-ca", "wrong-name"],
)
def test_tls_refuses_a_broker_certificate_it_cannot_verify(
    site: Site, tmp_path: Path, broker_certificate: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = site.broker(tmp_path / "broker", server=broker_certificate(tmp_path, site))
    store = EmbeddingStore(tmp_path / "store.db")
    agent = Agent(broker.port, store, tls=True, ca_file=site.ca)
    try:
        agent.outbox.submit("events/face", event(1))
        agent.start()
        up, reason = wait_for_connection_report(agent)
        assert agent.link.publish("events/face", event(2).encode()) is None
    finally:
        agent.stop()
        broker.stop()
    assert up is False
    assert "TLS: the broker's certificate failed verification" in reason and why in reason
    assert "ca_file" in reason
    assert any(why in record.getMessage() for record in caplog.records if record.levelname == "ERROR")
    assert store.outbox.count() == 1  # kept for a broker it can trust, never sent
    assert "New client connected" not in broker.log


def test_client_certificates_from_the_config_connect_and_publish(
    site: Site, tmp_path: Path, tls_subscriber_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The [mqtt] keys as a systemd unit gives them: the key as a bare name in $CREDENTIALS_DIRECTORY."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(site.device.key, credentials / "mqtt.key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = MqttConfig(tls=True, ca_file=site.ca, cert_file=site.device.cert, key_file=Path("mqtt.key"))
    ca_file, cert_file, key_file = config.tls_files()
    assert key_file == credentials / "mqtt.key"
    broker = site.broker(tmp_path / "broker", require_certificate=True)
    try:
        watcher = tls_subscriber_factory(
            broker.port, site.ca, PREFIX + "events/#", site.watcher.cert, site.watcher.key
        )
        agent = Agent(
            broker.port,
            EmbeddingStore(tmp_path / "store.db"),
            tls=True,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        ).start()
        try:
            assert agent.link.wait_connected(10), agent.connections
            agent.outbox.submit("events/face", event(1))
            assert agent.outbox.flush(10)
            watcher.wait_for(lambda: watcher.on(PREFIX + "events/face"))
        finally:
            agent.stop()
    finally:
        broker.stop()
    assert watcher.on(PREFIX + "events/face") == [json.loads(event(1))]
    assert "as door-box (p5, c1, k30, u'door-box')" in broker.log  # the certificate's CN is the user


def stranger_certificate(tmp_path: Path, site: Site) -> dict[str, Path]:
    """A client certificate from a CA the broker does not know."""
    certs.init_ca(tmp_path / "other", server_names=["127.0.0.1"])
    issued = certs.issue_device(tmp_path / "other", "door-box")
    return {"cert_file": issued.cert, "key_file": issued.key}


@pytest.mark.parametrize(
    ("client_certificate", "why"),
    [
        (lambda tmp_path, site: {}, "the broker requires a client certificate: set cert_file and key_file"),
        (stranger_certificate, "the broker does not accept this client certificate"),
    ],
    ids=["none", "another-ca"],
)
def test_a_broker_that_requires_client_certificates_refuses_others(
    site: Site, tmp_path: Path, client_certificate: Any, why: str
) -> None:
    broker = site.broker(tmp_path / "broker", require_certificate=True)
    store = EmbeddingStore(tmp_path / "store.db")
    agent = Agent(broker.port, store, tls=True, ca_file=site.ca, **client_certificate(tmp_path, site))
    try:
        agent.outbox.submit("events/face", event(1))
        agent.start()
        up, reason = wait_for_connection_report(agent)
    finally:
        agent.stop()
        broker.stop()
    assert up is False and why in reason
    assert store.outbox.count() == 1
    assert "New client connected" not in broker.log


def restarted(broker: Mosquitto) -> None:
    """Stop the broker and start it again on its port: every client has to connect anew."""
    broker.stop()
    broker.start()


def test_a_client_certificate_renewed_in_place_is_used_at_the_next_reconnect(
    site: Site, tmp_path: Path
) -> None:
    """The device certificate expires while the link is connected; the renewed files are installed at the
    same paths; after a broker restart the link connects with them, without an agent restart."""
    now = datetime.now(timezone.utc)
    # valid for 4 s more: the link connects with it, then it expires while connected
    old = certs.issue_device(
        site.tls_dir, "door-box", days=1, not_before=now - timedelta(days=1) + timedelta(seconds=4)
    )
    broker = site.broker(tmp_path / "broker", require_certificate=True)
    agent = Agent(
        broker.port,
        EmbeddingStore(tmp_path / "store.db"),
        tls=True,
        ca_file=site.ca,
        cert_file=old.cert,
        key_file=old.key,
        device_id="door-box",
    ).start()
    try:
        assert agent.link.wait_connected(10), agent.connections
        renewed = certs.issue_device(site.tls_dir, "door-box")  # written in place, as an operator installs it
        assert renewed.cert == old.cert and renewed.key == old.key
        wait_until(lambda: datetime.now(timezone.utc) > old.not_after + timedelta(seconds=1), 10)
        restarted(broker)
        wait_until(lambda: agent.connections[-1][0] and agent.link.connected)
        agent.outbox.submit("events/face", event(1))
        assert agent.outbox.flush(10)
        validity = agent.link.certificate_validity()
        assert validity is not None and validity.not_after == renewed.not_after.timestamp()
    finally:
        agent.stop()
        broker.stop()
    refusals = [why for up, why in agent.connections if not up and "CERTIFICATE_EXPIRED" in why]
    assert not refusals, refusals
    assert broker.log.count("as door-box (p5, c1, k30, u'door-box')") == 2


def test_renewed_files_that_do_not_match_keep_the_pair_in_use(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewed certificate installed without its key: one error naming both files, the link goes on with
    the pair it had; once the key is installed too, the next connection uses the renewed pair."""
    device = tmp_path / "device"
    device.mkdir()
    cert_file, key_file = device / "mqtt.pem", device / "mqtt.key"
    shutil.copy(site.device.cert, cert_file)
    shutil.copy(site.device.key, key_file)
    renewed = certs.issue_device(site.tls_dir, "door-box", out_dir=tmp_path / "renewed", days=400)
    broker = site.broker(tmp_path / "broker", require_certificate=True)
    agent = Agent(
        broker.port,
        EmbeddingStore(tmp_path / "store.db"),
        tls=True,
        ca_file=site.ca,
        cert_file=cert_file,
        key_file=key_file,
    ).start()
    try:
        assert agent.link.wait_connected(10), agent.connections
        shutil.copy(renewed.cert, cert_file)  # the key not yet
        for _ in range(2):
            restarted(broker)
            wait_until(lambda: agent.link.connected)
        validity = agent.link.certificate_validity()
        assert validity is not None and validity.not_after == site.device.not_after.timestamp()
        shutil.copy(renewed.key, key_file)
        restarted(broker)
        wait_until(lambda: agent.link.connected)
        validity = agent.link.certificate_validity()
        assert validity is not None and validity.not_after == renewed.not_after.timestamp()
    finally:
        agent.stop()
        broker.stop()
    (error,) = agent.errors
    assert f"key_file {key_file} is not the key of cert_file {cert_file}" in error
    assert "install the key issued with that certificate" in error
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert logged == [error]
    assert agent.connections.count((True, "connected")) == 4, agent.connections  # the start, 3 restarts


def dated_broker_certificate(tmp_path: Path, site: Site, not_before: datetime) -> certs.Issued:
    """A broker certificate for 127.0.0.1 from the site CA, valid one day from not_before."""
    target = certs.Issued(tmp_path / "dated.pem", tmp_path / "dated.key")
    address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    return certs._issue(  # the public issuers date certificates from now
        site.tls_dir,
        target,
        common_name="127.0.0.1",
        alt_names=[address],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=1,
        not_before=not_before,
    )


@pytest.mark.parametrize(
    ("broker_days", "client_days", "advice"),
    [
        (-3, 0, "past its expiry by this box's clock; renew the broker's certificate"),
        (2, 0, "it is not valid yet by this box's clock, which is likely wrong: set the clock"),
        (0, -3, "as expired: install the renewed certificate and key at cert_file and key_file"),
    ],
    ids=["broker-expired", "broker-not-yet-valid", "client-expired"],
)
def test_a_certificate_out_of_its_dates_is_named_with_the_fix(
    site: Site,
    tmp_path: Path,
    broker_days: int,
    client_days: int,
    advice: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(timezone.utc)
    server = site.server
    if broker_days:
        server = dated_broker_certificate(tmp_path, site, now + timedelta(days=broker_days))
    client = site.device
    if client_days:
        client = certs.issue_device(
            site.tls_dir, "door-box", days=1, not_before=now + timedelta(days=client_days)
        )
    broker = site.broker(tmp_path / "broker", require_certificate=True, server=server)
    agent = Agent(
        broker.port,
        EmbeddingStore(tmp_path / "store.db"),
        tls=True,
        ca_file=site.ca,
        cert_file=client.cert,
        key_file=client.key,
        device_id="door-box",
    )
    try:
        agent.start()
        up, reason = wait_for_connection_report(agent)
        wait_until(lambda: len(agent.connections) >= 3)  # retried, with the same reason
    finally:
        agent.stop()
        broker.stop()
    assert up is False and advice in reason, reason
    assert "ca_file must be the CA that signed it" not in reason
    assert agent.connections[:3] == [(False, reason)] * 3
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"MQTT: cannot connect to 127.0.0.1:{broker.port}: {reason}"
    ]  # once
    if client_days:
        assert f"cert_file {client.cert}" in reason and "facefleet-server certs renew door-box" in reason


@pytest.mark.slow
def test_the_service_connects_with_client_certificates_from_its_config(
    site: Site,
    model_store: ModelStore,
    model_cache: Path,
    tmp_path: Path,
    tls_subscriber_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AgentService from a config file: retained status and a command's reply over TLS, offline on stop."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    shutil.copy(site.device.key, credentials / "mqtt.key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    broker = site.broker(tmp_path / "broker", require_certificate=True)
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        textwrap.dedent(
            f"""
            device_id = "door-box"
            [mqtt]
            host = "127.0.0.1"
            port = {broker.port}
            reconnect_max_s = 1
            tls = true
            ca_file = "{site.ca}"
            cert_file = "{site.device.cert}"
            key_file = "mqtt.key"
            """
        )
    )
    try:
        watcher = tls_subscriber_factory(
            broker.port, site.ca, PREFIX + "#", site.watcher.cert, site.watcher.key
        )
        service = AgentService(load_config(config_path), state)
        runner = threading.Thread(target=service.run)
        runner.start()
        try:
            watcher.wait_for(lambda: watcher.on(PREFIX + "status"), timeout=30)
            watcher.client.publish(PREFIX + "cmd/ping", json.dumps({"request_id": "p1"}), qos=1)
            watcher.wait_for(lambda: watcher.on(PREFIX + "replies/ping"))
        finally:
            service.stop_event.set()
            runner.join(30)
        watcher.wait_for(lambda: watcher.on(PREFIX + "status")[-1]["state"] == "offline")
    finally:
        broker.stop()
    assert watcher.on(PREFIX + "status")[0]["state"] == "online"
    (answer,) = watcher.on(PREFIX + "replies/ping")
    assert answer["request_id"] == "p1" and answer["ok"] is False and "unknown command" in answer["detail"]
    assert "u'door-box'" in broker.log


# ---- refusals and answers to other messages ------------------------------------------------------------


def test_messages_the_broker_refuses_do_not_hold_up_the_events_behind_them(
    tmp_path: Path, subscriber_factory: Any
) -> None:
    allowed = f"topic readwrite {PREFIX}events/#\ntopic readwrite {PREFIX}status\ntopic read {PREFIX}cmd/#\n"
    broker = Mosquitto(tmp_path, acl=allowed).start()  # the site's ACL: no replies/ for this agent yet
    store = EmbeddingStore(tmp_path / "store.db")
    watcher = subscriber_factory(broker.port, PREFIX + "#")
    agent = Agent(broker.port, store)
    try:
        for number in range(60):  # more than the window of 50 unacknowledged messages
            agent.outbox.submit("replies/verify", event(number))
        for number in range(20):
            agent.outbox.submit("events/face", event(number))
        agent.start()
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "events/face")) >= 20, timeout=30)
        wait_until(lambda: agent.outbox.backing_off() == 60 and store.outbox.count() == 60)
        assert watcher.on(PREFIX + "replies/verify") == []
        (tmp_path / "acl").write_text(allowed + f"topic readwrite {PREFIX}replies/#\n")  # put right
        assert broker.process is not None
        broker.process.send_signal(signal.SIGHUP)  # mosquitto reads its ACL again
        assert agent.outbox.flush(30), f"{store.outbox.count()} messages still queued"
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "replies/verify")) >= 60, timeout=30)
    finally:
        agent.stop()
        broker.stop()
    assert [payload["n"] for payload in watcher.on(PREFIX + "events/face")] == list(range(20))
    assert sorted(payload["n"] for payload in watcher.on(PREFIX + "replies/verify")) == list(range(60))
    assert store.outbox.rejected() == 0  # "Not authorized" waited for the ACL; nothing was thrown away


def test_a_message_mqtt_cannot_carry_is_rejected_and_never_holds_up_the_events_behind_it(
    broker: Mosquitto, tmp_path: Path, subscriber_factory: Any
) -> None:
    """paho refuses a topic over 65,535 bytes before anything is sent (ValueError): the message is removed
    and counted as rejected, like one the broker refused for good."""
    store = EmbeddingStore(tmp_path / "store.db")
    watcher = subscriber_factory(broker.port, PREFIX + "events/#")
    agent = Agent(broker.port, store)
    too_long = "replies/" + "x" * (65_536 - len(PREFIX) - len("replies/"))  # with the prefix: 65,536 bytes
    agent.outbox.submit(too_long, event(0))
    for number in range(1, 4):
        agent.outbox.submit("events/face", event(number))
    agent.start()
    try:
        assert agent.outbox.flush(10), f"{store.outbox.count()} messages still queued"
        watcher.wait_for(lambda: len(watcher.on(PREFIX + "events/face")) >= 3, timeout=10)
    finally:
        agent.stop()
    assert [payload["n"] for payload in watcher.on(PREFIX + "events/face")] == [1, 2, 3]
    assert store.outbox.rejected() == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_an_old_answer_to_another_message_does_not_acknowledge_an_outbox_message(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store.db")
    clock = Clock()
    mids = iter([7, 8])
    published: list[int] = []
    publisher = OutboxPublisher(
        store, lambda t, p, q: published.append(mid := next(mids)) or mid, clock=clock
    )
    publisher.start()
    publisher.connection_changed(True)
    try:
        publisher.acknowledged(7)  # the PUBACK of a status message, say, that used id 7 long ago
        clock.now += 60
        time.sleep(0.2)
        publisher.submit("events/face", event(0))
        wait_until(lambda: published == [7])
        time.sleep(1.5)  # longer than the thread's round of one second
        assert store.outbox.count() == 1  # still waiting for its own PUBACK
        publisher.acknowledged(7)
        wait_until(lambda: store.outbox.count() == 0)
        publisher.acknowledged(8)  # a PUBACK that overtakes publish() returning its id: kept a moment
        publisher.submit("events/face", event(1))
        wait_until(lambda: published == [7, 8] and store.outbox.count() == 0)
    finally:
        publisher.stop()


def test_a_refused_message_waits_longer_each_time_and_an_invalid_one_is_removed(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store.db")
    clock = Clock()
    published: list[str] = []

    def publish(topic: str, payload: bytes, qos: int) -> int:
        published.append(topic)
        return len(published)

    publisher = OutboxPublisher(store, publish, clock=clock)
    publisher.start()
    publisher.connection_changed(True)
    try:
        publisher.submit("events/face", event(0))
        for attempt in range(1, 4):
            wait_until(lambda attempt=attempt: len(published) == attempt)  # type: ignore[misc]
            publisher.refused(attempt, "Quota exceeded", permanent=False)
            wait_until(lambda: publisher.backing_off() == 1 and not publisher._refused)
            clock.now += RETRY_FIRST_S * 2 ** (attempt - 1) - 1
            time.sleep(1.5)  # longer than the thread's round of one second
            assert len(published) == attempt  # it waits out its back-off: 5, 10, 20 s
            clock.now += 1.5
        wait_until(lambda: len(published) == 4)
        publisher.acknowledged(4)
        wait_until(lambda: store.outbox.count() == 0)
        assert (publisher.backing_off(), store.outbox.rejected()) == (0, 0)
        publisher.submit("events/face", event(1))
        wait_until(lambda: len(published) == 5)
        publisher.refused(5, "Payload format invalid", permanent=True)
        wait_until(lambda: store.outbox.rejected() == 1)
        assert store.outbox.count() == 0
    finally:
        publisher.stop()


def test_a_connection_for_relays_drops_data_the_broker_does_not_take_in_time(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config = load_config_text(
        tmp_path,
        f'[mqtt]\nport = {broker.port}\n[[cameras]]\nname = "c"\nsource = "0"\n'
        '[[doors]]\nname = "front"\ncamera = "c"\nrelay_topic = "relay/front"\nrelay_expiry_s = 3\n'
        '[[doors]]\nname = "back"\ncamera = "c"\n',
    )
    wired = mqtt_settings(config, PREFIX, "door-box")
    assert wired.unacked_timeout_s == 3
    agent = Agent(broker.port, EmbeddingStore(tmp_path / "store.db"), unacked_timeout_s=3).start()
    try:
        assert agent.link.wait_connected(10)
        connection = agent.link._client.socket()
        assert isinstance(connection, socket.socket)
        assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 3000
    finally:
        agent.stop()


def load_config_text(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(path)


def test_the_back_off_doubles_to_its_cap_and_stays_there() -> None:
    waits = [back_off(refusals) for refusals in (1, 2, 3, 6, 7, 1024, 1025, 10**6)]
    assert waits == [5.0, 10.0, 20.0, 160.0, 300.0, 300.0, 300.0, 300.0]


def test_a_store_error_while_removing_a_refused_message_loses_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddingStore(tmp_path / "store.db")
    published: list[int] = []
    publisher = OutboxPublisher(store, lambda t, p, q: published.append(len(published) + 1) or len(published))
    reject = store.outbox.reject
    failures = iter([True])

    def flaky_reject(message_id: int) -> bool:
        if next(failures, False):
            raise StoreError("database is locked")
        return reject(message_id)

    monkeypatch.setattr(store.outbox, "reject", flaky_reject)
    publisher.start()
    publisher.connection_changed(True)
    try:
        for number in range(3):
            publisher.submit("events/face", event(number))
        wait_until(lambda: len(published) == 3)
        for mid in (1, 2, 3):
            publisher.refused(mid, "Topic Name invalid", permanent=True)
        wait_until(lambda: store.outbox.rejected() == 3)
        assert store.outbox.count() == 0
    finally:
        publisher.stop()


def test_an_answer_that_overtook_its_publish_is_acted_on_at_once(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store.db")
    publisher = OutboxPublisher(store, lambda t, p, q: 9)
    publisher.start()
    publisher.connection_changed(True)
    try:
        time.sleep(1.2)  # the thread now sleeps in its round of one second
        publisher.acknowledged(9)
        publisher.submit("events/face", event(0))
        wait_until(lambda: store.outbox.count() == 0, timeout=0.8)  # before the next round
    finally:
        publisher.stop()


class WithholdingBroker:
    """A socket server speaking MQTT 5 to the agent as a broker does (CONNACK, SUBACK, PINGRESP, PUBACK), but
    that never acknowledges a publish on the first connection: a broker stuck behind its storage, say. It
    acknowledges every publish on later connections. published: (topic, payload) of each connection's
    publishes."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.published: list[list[tuple[str, bytes]]] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:  # closed
                return
            self.published.append([])
            received = self.published[-1]
            acknowledge = len(self.published) > 1
            thread = threading.Thread(
                target=self._serve, args=(connection, received, acknowledge), daemon=True
            )
            thread.start()

    def _serve(self, connection: socket.socket, received: list[tuple[str, bytes]], acknowledge: bool) -> None:
        with connection:
            while True:
                try:
                    header, body = read_packet(connection)
                except (OSError, EOFError):
                    return
                kind = header >> 4
                if kind == 1:  # CONNECT: accepted, no properties
                    connection.sendall(bytes([0x20, 3, 0, 0, 0]))
                elif kind == 8:  # SUBSCRIBE (one filter): granted QoS 1
                    connection.sendall(bytes([0x90, 4, body[0], body[1], 0, 1]))
                elif kind == 12:  # PINGREQ
                    connection.sendall(bytes([0xD0, 0]))
                elif kind == 14:  # DISCONNECT
                    return
                elif kind == 3:  # PUBLISH
                    topic, packet_id, payload = publish_parts(header, body)
                    received.append((topic, payload))
                    if acknowledge and packet_id is not None:
                        connection.sendall(bytes([0x40, 2]) + packet_id)


def read_packet(connection: socket.socket) -> tuple[int, bytes]:
    """One MQTT control packet: its first byte and the rest after the remaining length."""
    header = read_exactly(connection, 1)[0]
    length, shift = 0, 0
    while True:
        byte = read_exactly(connection, 1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return header, read_exactly(connection, length)


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def publish_parts(header: int, body: bytes) -> tuple[str, bytes | None, bytes]:
    """A PUBLISH's topic, packet id (None at QoS 0) and payload (past its MQTT 5 properties)."""
    at = 2 + int.from_bytes(body[:2], "big")
    topic, packet_id = body[2:at].decode(), None
    if (header >> 1) & 3:
        packet_id, at = body[at : at + 2], at + 2
    properties, shift = 0, 0
    while True:
        byte = body[at]
        at += 1
        properties += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return topic, packet_id, body[at + properties :]


def test_a_broker_that_acknowledges_nothing_is_left_and_the_messages_go_out_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = WithholdingBroker()
    store = EmbeddingStore(tmp_path / "store.db")
    agent = Agent(broker.port, store, ack_timeout_s=1.0)
    for number in range(60):  # more than the window of 50 unacknowledged messages
        agent.outbox.submit("events/face", event(number))
    agent.start()
    try:
        assert agent.outbox.flush(30), f"{store.outbox.count()} messages still queued"
    finally:
        agent.stop()
        broker.close()
    first, *later = broker.published
    assert first and later  # the first connection took messages and answered none
    events = [payload for messages in later for topic, payload in messages if topic == PREFIX + "events/face"]
    assert {json.loads(payload)["n"] for payload in events} == set(range(60))
    assert len(events) == 60  # from the outbox once each: the client library's own copies were dropped
    warning = f"MQTT: broker 127.0.0.1:{broker.port} has acknowledged no message for"
    assert any(r.levelname == "WARNING" and r.getMessage().startswith(warning) for r in caplog.records)
    assert agent.errors and agent.errors[0].startswith(warning)
