"""At-least-once delivery of events: every message is committed to the store's outbox before it is
published (QoS 1) and deleted only when the broker's PUBACK arrives. After a broker outage or an agent
restart the backlog goes out oldest first; a message may then arrive twice, always with the same event id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from facefleet.agent.domain.records import StoreError
from facefleet.agent.store.database import EmbeddingStore

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int], "int | None"]


class OutboxPublisher:
    """Moves outbox messages to the broker on its own thread, keeping at most `window` unacknowledged.

    publish(topic_suffix, payload, qos) returns the MQTT message id, or None when not connected; connect
    `acknowledged(mid)` and `connection_changed(up)` to the MQTT link's callbacks."""

    def __init__(self, store: EmbeddingStore, publish: Publish, window: int = 50) -> None:
        self._store = store
        self._publish = publish
        self._window = window
        self._lock = threading.Lock()  # never held while calling into the MQTT client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight: dict[int, int] = {}  # MQTT message id → outbox id
        self._early_acks: set[int] = set()  # acknowledged before publish() returned their id
        self._acked: list[int] = []
        self._sent: set[int] = set()  # outbox ids published on this connection and not yet deleted
        self._connected = False
        self._generation = 0  # bumped on every disconnect
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(
        self, topic_suffix: str, payload: str, qos: int = 1, *, same_kind_limit: int | None = None
    ) -> int | None:
        """Commit a message to the outbox (before any attempt to send it); its outbox id, or None when
        same_kind_limit messages of its kind already wait (Outbox.put)."""
        message_id = self._store.outbox.put(topic_suffix, payload, qos, same_kind_limit=same_kind_limit)
        self._wake.set()
        return message_id

    def acknowledged(self, mid: int) -> None:
        with self._lock:
            outbox_id = self._in_flight.pop(mid, None)
            if outbox_id is not None:
                self._acked.append(outbox_id)
            else:
                self._early_acks.add(mid)
        self._wake.set()

    def connection_changed(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected
            if not connected:
                self._generation += 1
                self._in_flight.clear()  # resent from the outbox after reconnecting
                self._early_acks.clear()
                self._sent = set(self._acked)
        self._wake.set()

    def pending(self) -> int:
        return self._store.outbox.count()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        while self._store.outbox.count() > 0:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._delete_acknowledged()
                self._send()
            except StoreError as exc:
                log.error("outbox: %s (retrying)", exc)
                self._stop.wait(1.0)
        self._delete_acknowledged()

    def _delete_acknowledged(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
        self.delivered += self._store.outbox.delete_many(acked)
        with self._lock:
            self._sent.difference_update(acked)

    def _send(self) -> None:
        with self._lock:
            if not self._connected:
                return
            generation = self._generation
            sent = set(self._sent)
            room = self._window - len(self._in_flight)
        if room <= 0:
            return
        for message in self._store.outbox.pending(len(sent) + room):
            if message.message_id in sent:
                continue
            mid = self._publish(message.topic, message.payload.encode(), message.qos)
            if mid is None:
                return
            with self._lock:
                if self._generation != generation:
                    return  # the connection dropped meanwhile: the message stays queued and is resent
                self._sent.add(message.message_id)
                if mid in self._early_acks:
                    self._early_acks.discard(mid)
                    self._acked.append(message.message_id)
                else:
                    self._in_flight[mid] = message.message_id
