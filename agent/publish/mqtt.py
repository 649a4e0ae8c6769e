"""The one module that talks MQTT (paho-mqtt 2.x, MQTT 5): the connection, the topic prefix, the last will
and retained status, the command subscription, and QoS 1 publishes acknowledged by PUBACK.

Topics live under a prefix, by default `facefleet/<device_id>/`: `status` (retained; the last will sets it
to offline), `events/face`, `access/<door>`, `cameras/<camera>/…` (retained), and `cmd/#` (subscribed; a
refused subscription is logged and reported as an error). Commands delivered with the retain flag (a
retained message the broker replays on every connect) are logged and ignored, never passed on.

Every connect starts a new session that ends with the connection (clean start, no session expiry): the
broker keeps no command for the agent while it is away, so a badge claim sent then is never executed late;
the sender gets no reply and must send it again.

With TLS, the CA, certificate and key files are read again before every connection attempt: a renewed client
certificate or a replaced CA file installed at the same paths is used from the next (re)connection on, with
no restart. Files that do not make a usable TLS setup (a key that is not the certificate's, a half-copied
file) are logged once as an error and the ones loaded before stay in use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from facefleet.agent.domain.clock import CLOCK_FIX
from facefleet.agent.publish.certificates import MAX_CERTIFICATE_FILE_BYTES, Validity, read_validity, utc

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64 * 1024
MAX_PACKET_BYTES = 2 * MAX_COMMAND_BYTES
"""The largest MQTT packet the agent takes (MQTT 5 Maximum Packet Size, told to the broker at connect): the
broker drops bigger messages instead of sending them, so none is read into memory whole."""
OFFLINE_STATUS = {"schema": 1, "state": "offline"}
PERMANENT_REFUSALS = frozenset({0x90, 0x99})
"""MQTT 5 PUBACK reasons no retry mends: Topic Name invalid, Payload format invalid (Not authorized is not
among them: a broker's ACL can be put right)."""
ACK_TIMEOUT_KEEPALIVES = 3
"""A connected broker that leaves a message unacknowledged for this many keep-alive intervals is taken for
stuck: the connection is dropped and made again, and the unacknowledged messages go out again."""
CERT_HAS_EXPIRED, CERT_NOT_YET_VALID = 10, 9
"""OpenSSL's verify codes (X509_V_ERR_…) for a broker certificate out of its validity period."""


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection. prefix: topic prefix ending in '/'; tls: connect with TLS (ca_file to trust a
    private CA, cert_file/key_file for client certificates); reconnect backoff in seconds; unacked_timeout_s:
    drop the connection when data sent to the broker stays unacknowledged (by TCP) this long (Linux
    TCP_USER_TIMEOUT), so that a message written to a silent connection is lost with it instead of reaching
    the broker when the network comes back (a relay's 'open', minutes later)."""

    host: str
    port: int
    prefix: str
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60
    max_inflight: int = 100
    unacked_timeout_s: float | None = None
    device_id: str = "DEVICE"
    """This device's id, for the commands an error names (`facefleet-server certs renew DEVICE`)."""


class MqttLink:
    """One connection to the broker, kept up by paho's network thread with reconnect backoff.

    on_ack(mid) runs when the broker acknowledged a QoS 1 publish, on_refused(mid, reason, permanent) when it
    refused one (an MQTT 5 PUBACK with a failure reason; permanent: an invalid topic or payload, which no
    retry mends); on_command(subtopic, payload) for each
    live message under `<prefix>cmd/` of at most MAX_COMMAND_BYTES; on_oversized(subtopic, size) instead
    for a larger one (its payload is not passed on); on_connection(connected, reason) on every connect and
    disconnect, and on each failed attempt, with why (a refused TLS certificate, say); on_error(message) for
    a fault the agent's status should show (a refused subscription, a broker that acknowledges nothing).
    Callbacks run on paho's thread and must be quick."""

    def __init__(
        self,
        settings: MqttSettings,
        on_ack: Callable[[int], None],
        on_command: Callable[[str, bytes], None],
        on_connection: Callable[[bool, str], None],
        on_oversized: Callable[[str, int], None] | None = None,
        on_refused: Callable[[int, str, bool], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_ack = on_ack
        self._on_error = on_error
        self._on_refused = on_refused
        self._on_command = on_command
        self._on_oversized = on_oversized
        self._on_connection = on_connection
        self._connected = threading.Event()
        self._status_payload: bytes | None = None
        # paho's last socket error, since its disconnect reason for a lost socket is only "Unspecified error"
        self._socket_error: str | None = None
        self._failure: str | None = None  # the last failure logged, so that retries do not repeat it
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        self._tls: TlsFiles | None = None
        if settings.tls:
            self._tls = TlsFiles(settings, on_error)
            client.tls_set_context(self._tls.paho_context())
            client.on_pre_connect = self._handle_pre_connect
        client.will_set(self.topic("status"), json.dumps(OFFLINE_STATUS), qos=1, retain=True)
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
        client.max_inflight_messages_set(settings.max_inflight)
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_log = self._handle_log
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        self._client = client

    def topic(self, suffix: str) -> str:
        return f"{self.settings.prefix}{suffix}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def certificate_validity(self) -> Validity | None:
        """The validity period of the client certificate the next connection presents (the files read
        again first, when they changed); None without a client certificate."""
        if self._tls is None:
            return None
        self._tls.refresh()
        return self._tls.validity

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a loss."""
        limits = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        limits.MaximumPacketSize = MAX_PACKET_BYTES
        self._client.connect_async(  # no session expiry (none set): the session ends with the connection
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=True,
            properties=limits,
        )
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(
        self, suffix: str, payload: bytes, qos: int = 1, retain: bool = False, expiry_s: int | None = None
    ) -> int | None:
        """Publish under the prefix; the message id to await in on_ack, or None when not connected.
        expiry_s: the MQTT 5 message expiry (a broker drops the message once it is that old, undelivered).
        ValueError for a message MQTT cannot carry at all (a topic over 65,535 bytes of UTF-8 or with a
        wildcard, a payload over 256 MiB): no retry mends it."""
        if not self.connected:
            return None
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry_s
        topic = self.topic(suffix)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def publish_retained(self, topic: str, payload: dict[str, Any]) -> bool:
        """Publish a retained JSON document to a full topic (e.g. Home Assistant discovery), if connected;
        whether it was handed to the client (False: not connected)."""
        if not self.connected:
            return False
        info = self._client.publish(topic, json.dumps(payload).encode(), qos=1, retain=True)
        return bool(info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS)

    def publish_latest(self, suffix: str, payload: bytes, expiry_s: int) -> bool:
        """Publish raw bytes (e.g. a JPEG) retained under the prefix, if connected: a latest value that the
        next one replaces, and the broker drops after expiry_s (MQTT 5 message expiry). QoS 0, so no PUBACK
        comes back to be taken for an outbox message's. Whether it was handed to the client."""
        if not self.connected:
            return False
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = expiry_s
        info = self._client.publish(self.topic(suffix), payload, qos=0, retain=True, properties=properties)
        return bool(info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS)

    def clear_retained(self, topic: str) -> Callable[[], bool] | None:
        """Remove the broker's retained message on a full topic (an empty retained message), if connected:
        what tells whether the broker has acknowledged the removal, or None when not connected."""
        if not self.connected:
            return None
        info = self._client.publish(topic, b"", qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return info.is_published

    def drop_stalled_connection(self, waited_s: float) -> None:
        """The broker, connected, has left a message unacknowledged for waited_s seconds: log it, report it
        (on_error) and drop the connection, so that paho connects again (after reconnect_min_s) and every
        unacknowledged message goes out again on the new connection."""
        where = f"{self.settings.host}:{self.settings.port}"
        message = (
            f"MQTT: broker {where} has acknowledged no message for {waited_s:.0f} s while connected; "
            "reconnecting to send the unacknowledged messages again"
        )
        log.warning("%s", message)
        if self._on_error is not None:
            self._on_error(message)
        connection = self._client.socket()
        if not isinstance(connection, socket.socket):
            return
        self._socket_error = f"no acknowledgement for {waited_s:.0f} s"
        # the plain socket's shutdown, also under TLS: paho's thread then reads the end of the stream
        with contextlib.suppress(OSError):  # already gone
            socket.socket.shutdown(connection, socket.SHUT_RDWR)

    def set_status(self, status: dict[str, Any]) -> None:
        """Publish the retained status now (if connected) and again after every reconnect."""
        self._status_payload = json.dumps(status).encode()
        if self.connected:
            self._client.publish(self.topic("status"), self._status_payload, qos=1, retain=True)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the offline status, disconnect cleanly and stop the network thread."""
        if self.connected:
            info = self._client.publish(self.topic("status"), json.dumps(OFFLINE_STATUS), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("MQTT: offline status not confirmed before disconnecting")
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "MQTT: broker %s:%s refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason.getName(),
            )
            self._on_connection(False, str(reason.getName()))
            return
        self._socket_error = self._failure = None
        # Each connect starts a new session (clean start): what the last one left unacknowledged is the
        # outbox's to send again, from its store, and the retained state is published anew; paho would
        # otherwise send its own copies too, and keep them, at every reconnect.
        client.drop_out_messages()
        self._limit_unacked(client)
        client.subscribe(self.topic("cmd/#"), qos=1)
        if self._status_payload is not None:
            client.publish(self.topic("status"), self._status_payload, qos=1, retain=True)
        self._connected.set()
        log.info("MQTT: connected to %s:%s", self.settings.host, self.settings.port)
        self._on_connection(True, "connected")

    def _limit_unacked(self, client: paho.Client) -> None:
        timeout = self.settings.unacked_timeout_s
        connection = client.socket()
        if timeout is None or not isinstance(connection, socket.socket):  # an SSLSocket is one too
            return
        if not hasattr(socket, "TCP_USER_TIMEOUT"):  # not Linux
            return
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))
        except OSError as exc:
            log.warning("MQTT: cannot bound how long sent data may stay unacknowledged: %s", exc)

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        why = str(reason.getName())
        if reason.is_failure and self._socket_error is not None:
            why = f"{why}: {_with_hint(self._socket_error, self.settings)}"
        self._socket_error = None
        if was_connected:
            log.warning("MQTT: disconnected from %s:%s (%s)", self.settings.host, self.settings.port, why)
            self._on_connection(False, why)
        else:  # lost before the broker's CONNACK, e.g. a TLS 1.3 broker refusing the client certificate
            self._report_failure(why)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connection attempt: that is the error.
        self._report_failure(_connect_error(sys.exc_info()[1], self.settings))

    def _handle_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        # paho's thread, before each connection attempt (the first and every reconnect)
        if self._tls is not None:
            self._tls.refresh()

    def _handle_log(self, client: paho.Client, userdata: Any, level: int, message: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._socket_error = message

    def _report_failure(self, why: str) -> None:
        if why != self._failure:
            log.error("MQTT: cannot connect to %s:%s: %s", self.settings.host, self.settings.port, why)
            self._failure = why
        self._on_connection(False, why)

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            name = str(reason.getName())
            log.warning("MQTT: broker rejected message %d: %s", mid, name)
            if self._on_refused is not None:
                self._on_refused(mid, name, reason.value in PERMANENT_REFUSALS)
            return
        self._on_ack(mid)

    def _handle_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(reason.getName()) for reason in reasons if reason.is_failure]
        if not refused:
            return
        topic = self.topic("cmd/#")
        message = (
            f"MQTT: broker {self.settings.host}:{self.settings.port} refused the subscription to {topic} "
            f"({', '.join(refused)}): no command (badge claim) reaches this agent; allow this client to "
            f"subscribe to {topic} in the broker's ACL"
        )
        log.error("%s", message)
        if self._on_error is not None:
            self._on_error(message)

    def _handle_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        prefix = self.topic("cmd/")
        if not message.topic.startswith(prefix):
            return
        # Only a replay of a retained message arrives with the flag (retain-as-published is off).
        if message.retain:
            log.warning(
                "MQTT: ignoring the retained command on %s: commands run only when published without retain "
                "(remove it by publishing an empty retained message to that topic)",
                _shown(message.topic),
            )
            return
        name, size = message.topic[len(prefix) :], len(message.payload)
        if size > MAX_COMMAND_BYTES:
            log.warning(
                "MQTT: refusing %s: %d bytes is over the %d-byte limit",
                _shown(message.topic),
                size,
                MAX_COMMAND_BYTES,
            )
            if self._on_oversized is not None:
                self._on_oversized(name, size)
            return
        self._on_command(name, bytes(message.payload))


def _shown(topic: str, chars: int = 200) -> str:
    """A topic as a log line shows it: cut to `chars` characters (a topic may take 65,535 bytes)."""
    return topic if len(topic) <= chars else f"{topic[:chars]}… ({len(topic)} characters)"


def _connect_error(error: BaseException | None, settings: MqttSettings) -> str:
    """Why a connection attempt failed, naming what to check."""
    if isinstance(error, ssl.SSLCertVerificationError):
        # the same text at every retry (it is logged once): no clock reading, the log line has the time
        why = f"TLS: the broker's certificate failed verification ({error.verify_message})"
        if error.verify_code == CERT_HAS_EXPIRED:
            return (
                f"{why}: it is past its expiry by this box's clock; renew the broker's certificate (from the "
                f"CA in ca_file) and restart the broker, or, if this box's clock is wrong, {CLOCK_FIX}"
            )
        if error.verify_code == CERT_NOT_YET_VALID:
            return (
                f"{why}: it is not valid yet by this box's clock, which is likely wrong: {CLOCK_FIX}, or "
                "give the broker a certificate valid now"
            )
        return (
            f"{why}; ca_file must be the CA that signed it, and host a name or address the certificate "
            "carries"
        )
    if isinstance(error, ssl.SSLError):
        return _with_hint(f"TLS handshake failed: {error}", settings)
    if isinstance(error, OSError):
        return f"cannot connect: {error.strerror or error}"
    return "cannot connect"


def _with_hint(error: str, settings: MqttSettings) -> str:
    """An OpenSSL error with the fix for the alerts a broker sends about client certificates."""
    if "CERTIFICATE_REQUIRED" in error:
        return f"{error}; the broker requires a client certificate: set cert_file and key_file"
    if "ALERT_UNKNOWN_CA" in error or "ALERT_BAD_CERTIFICATE" in error:
        return f"{error}; the broker does not accept this client certificate: use one its CA signed"
    if "ALERT_CERTIFICATE_EXPIRED" in error:
        return (
            f"{error}; the broker refuses this client certificate (cert_file {settings.cert_file}) as "
            "expired: install the renewed certificate and key at cert_file and key_file (from "
            f"`facefleet-server certs renew {settings.device_id}` on the server host, when the site CA "
            "issued it); they are read again at the next attempt"
        )
    return error


class TlsFiles:
    """The link's TLS setup, built from ca_file, cert_file and key_file, and built again from them when
    their contents changed (refresh(), before each connection attempt). Files that no longer make a usable
    setup leave the last good one in use: one error is logged (and reported to on_error) until they change
    again."""

    def __init__(self, settings: MqttSettings, on_error: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._on_error = on_error
        self._lock = threading.Lock()
        self._seen = self._digest()
        try:
            self.context = self._build()
        except _UnusableFilesError as exc:  # at start: the error itself (check-config names the file)
            raise exc.error from None
        self.validity = read_validity(settings.cert_file) if settings.cert_file is not None else None

    def paho_context(self) -> ssl.SSLContext:
        """The context to hand to paho once: it wraps every connection with the current `context`."""
        return _CurrentContext.of(self)

    def refresh(self) -> None:
        """Build the setup again if a file changed since it was last read; keep the one in use if the new
        files cannot be used."""
        with self._lock:
            seen = self._digest()
            if seen == self._seen:
                return
            self._seen = seen
            try:
                context = self._build()
            except _UnusableFilesError as exc:
                self._unusable(exc)
                return
            self.context = context
            cert_file = self.settings.cert_file
            self.validity = read_validity(cert_file) if cert_file is not None else None
            until = f" (cert_file valid until {utc(self.validity.not_after)})" if self.validity else ""
            log.info("MQTT: the TLS files changed and are used from the next connection on%s", until)

    def _digest(self) -> tuple[bytes | str, ...]:
        """What the files hold now (a hash each, or why one cannot be read)."""
        digests: list[bytes | str] = []
        for path in (self.settings.ca_file, self.settings.cert_file, self.settings.key_file):
            if path is None:
                continue
            try:
                with path.open("rb") as file:
                    digests.append(hashlib.sha256(file.read(MAX_CERTIFICATE_FILE_BYTES)).digest())
            except OSError as exc:
                digests.append(str(exc))
        return tuple(digests)

    def _build(self) -> ssl.SSLContext:
        """A client context as paho's tls_set makes it (the broker's certificate and name verified)."""
        settings = self.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if settings.ca_file is not None:
                context.load_verify_locations(cafile=settings.ca_file)
            else:
                context.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise _UnusableFilesError(f"ca_file {settings.ca_file}", exc) from exc
        if settings.cert_file is not None:
            try:  # no passphrase prompt on a terminal: an encrypted key fails
                context.load_cert_chain(settings.cert_file, settings.key_file, password=lambda: b"")
            except (OSError, ssl.SSLError) as exc:
                key = settings.key_file or settings.cert_file
                where = f"cert_file {settings.cert_file} and key_file {key}"
                raise _UnusableFilesError(where, exc) from exc
        return context

    def _unusable(self, unusable: _UnusableFilesError) -> None:
        settings, exc = self.settings, unusable.error
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            why = (
                f"key_file {settings.key_file} is not the key of cert_file {settings.cert_file}: install the "
                "key issued with that certificate"
            )
        else:
            problem = exc.strerror if not isinstance(exc, ssl.SSLError) and exc.strerror else str(exc)
            why = (
                f"{unusable.where}: {problem}; they must hold PEM certificates (the CA's, this device's) and "
                "this device's unencrypted key"
            )
        kept = f" (valid until {utc(self.validity.not_after)})" if self.validity is not None else ""
        message = (
            f"MQTT: the TLS files changed but cannot be used ({why}); connections go on with the files as "
            f"read before{kept} until they are put right"
        )
        log.error("%s", message)
        if self._on_error is not None:
            self._on_error(message)


class _UnusableFilesError(Exception):
    """TLS files that do not make a client context: which ones, and OpenSSL's or the system's error."""

    def __init__(self, where: str, error: OSError) -> None:
        super().__init__(f"{where}: {error}")
        self.where = where
        self.error = error


class _CurrentContext(ssl.SSLContext):
    """The context paho is given (it takes one, once): every socket is wrapped by the TlsFiles' current
    context, so a renewed certificate or CA is used from the next connection on."""

    files: TlsFiles

    @classmethod
    def of(cls, files: TlsFiles) -> _CurrentContext:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and checks host names, as the current one does
        context.files = files
        return context

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return self.files.context.wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, server_hostname, session
        )
