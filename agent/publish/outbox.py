"""At-least-once delivery of events: every message is committed to the store's outbox before it is
published (QoS 1) and deleted only when the broker's PUBACK arrives. After a broker outage or an agent
restart the backlog goes out oldest first; a message may then arrive twice, always with the same event id.

A message the broker refuses (an MQTT 5 PUBACK with a failure reason) leaves the window at once, so a topic
the broker's ACL forbids cannot hold up the events behind it. One that can never be taken (an invalid topic or
payload) is removed and counted (`outbox_rejected`), as is one the MQTT client refuses to publish at all
(a topic over MQTT's 65,535 bytes); any other (not authorised, a quota) waits RETRY_FIRST_S, doubling to
RETRY_MAX_S, and goes out again, as long as the outbox keeps it: an ACL put right later still gets every
event.

A broker that stays connected but leaves the oldest message in flight unanswered for `ack_timeout_s` would
hold the whole window, and every event behind it, for ever: the publisher then asks for the connection to be
dropped (`stalled`), and the messages go out again once it is made anew.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from facefleet.agent.domain.records import OutboxMessage, StoreError
from facefleet.agent.store.database import EmbeddingStore

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int], "int | None"]
"""(topic suffix, payload, qos) → the MQTT message id, None when not connected; ValueError when MQTT cannot
carry the message at all (MqttLink.publish)."""
EARLY_OUTCOME_S = 5.0
"""How long the broker's answer to a message id not (yet) in flight is kept: the answer may come before
publish() returned the id, but an answer older than this belongs to some other message."""
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0


def back_off(refusals: int) -> float:
    """Seconds a message refused `refusals` times waits before it goes out again: RETRY_FIRST_S, doubling
    to RETRY_MAX_S."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** min(max(refusals, 1) - 1, 16))


@dataclass(frozen=True)
class Refusal:
    """The broker's refusal of a publish: its reason code's name, and whether a retry can succeed."""

    reason: str
    permanent: bool


class OutboxPublisher:
    """Moves outbox messages to the broker on its own thread, keeping at most `window` unacknowledged.

    publish(topic_suffix, payload, qos) returns the MQTT message id, or None when not connected; connect
    `acknowledged(mid)`, `refused(mid, reason, permanent)` and `connection_changed(up)` to the MQTT link's
    callbacks. clock: monotonic seconds, for retry times, the age of early answers and of messages in
    flight. stalled(waited_s) is called (on the publisher's thread), once per connection, when the oldest
    message in flight has waited ack_timeout_s (None: never) for the broker's answer: it should drop the
    connection (MqttLink.drop_stalled_connection)."""

    def __init__(
        self,
        store: EmbeddingStore,
        publish: Publish,
        window: int = 50,
        clock: Callable[[], float] = time.monotonic,
        ack_timeout_s: float | None = None,
        stalled: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._publish = publish
        self._window = window
        self._ack_timeout_s = ack_timeout_s
        self._stalled = stalled
        self._stalled_generation = -1  # the connection stalled() was last called for
        self._lock = threading.Lock()  # never held while calling into the MQTT client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight: dict[int, tuple[int, float]] = {}  # MQTT message id → (outbox id, sent at), in order
        self._early: OrderedDict[int, tuple[float, Refusal | None]] = OrderedDict()
        """MQTT message id → (when, the broker's answer: None = acknowledged) for ids not in flight."""
        self._acked: list[int] = []
        self._refused: list[tuple[int, Refusal]] = []  # outbox ids refused, to settle on the thread
        self._refusals: dict[int, int] = {}  # outbox id → refusals so far
        self._retry_at: dict[int, float] = {}  # outbox id → the clock's time before which it waits
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

    @property
    def limit(self) -> int:
        """How many messages the outbox keeps before the oldest are dropped (mqtt.outbox_limit)."""
        return self._store.outbox.limit

    def wake(self) -> None:
        """Send what was queued (e.g. by EmbeddingStore.queue_event) without waiting for the next round."""
        self._wake.set()

    def acknowledged(self, mid: int) -> None:
        """The broker acknowledged message id mid (PUBACK)."""
        self._answered(mid, None)

    def refused(self, mid: int, reason: str, permanent: bool) -> None:
        """The broker refused message id mid (a PUBACK with a failure reason)."""
        self._answered(mid, Refusal(reason, permanent))

    def _answered(self, mid: int, refusal: Refusal | None) -> None:
        now = self._clock()
        with self._lock:
            in_flight = self._in_flight.pop(mid, None)
            if in_flight is not None:
                self._settle(in_flight[0], refusal)
            else:  # early, or the answer to a message of another kind (status, a QoS 0 latest value)
                while self._early and now - next(iter(self._early.values()))[0] >= EARLY_OUTCOME_S:
                    self._early.popitem(last=False)
                self._early.pop(mid, None)
                self._early[mid] = (now, refusal)
        self._wake.set()

    def _settle(self, outbox_id: int, refusal: Refusal | None) -> None:
        """Record the broker's answer to an outbox message (the lock held)."""
        if refusal is None:
            self._acked.append(outbox_id)
        else:
            self._refused.append((outbox_id, refusal))

    def connection_changed(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected
            if not connected:
                self._generation += 1
                self._in_flight.clear()  # resent from the outbox after reconnecting
                self._early.clear()
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
                self._handle_refused()
                self._send()
                self._check_stalled()
            except StoreError as exc:
                log.error("outbox: %s (retrying)", exc)
                self._stop.wait(1.0)
            except Exception:  # a fault of ours must not end delivery for good
                log.exception("outbox: unexpected error (retrying)")
                self._stop.wait(1.0)
        self._delete_acknowledged()

    def _delete_acknowledged(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
        self.delivered += self._store.outbox.delete_many(acked)
        with self._lock:
            self._sent.difference_update(acked)
        for outbox_id in acked:
            self._refusals.pop(outbox_id, None)
            self._retry_at.pop(outbox_id, None)

    def backing_off(self) -> int:
        """Messages the broker refused that wait to go out again."""
        return len(self._retry_at)

    def _handle_refused(self) -> None:
        """Remove and count what the broker can never take; let the rest wait and go out again. One at a
        time: a store error leaves the ones not yet handled for the next round."""
        while True:
            with self._lock:
                if not self._refused:
                    return
                outbox_id, refusal = self._refused[0]
            if refusal.permanent:
                self._store.outbox.reject(outbox_id)  # a StoreError: tried again next round
                self._refusals.pop(outbox_id, None)
                self._retry_at.pop(outbox_id, None)
                log.warning(
                    "outbox: the broker refused message %d for good (%s): removed, counted as rejected",
                    outbox_id,
                    refusal.reason,
                )
            else:
                count = self._refusals.get(outbox_id, 0) + 1
                wait = back_off(count)
                self._refusals[outbox_id] = count
                self._retry_at[outbox_id] = self._clock() + wait
                log.warning(
                    "outbox: the broker refused message %d (%s, %d times); sending it again in %.0f s",
                    outbox_id,
                    refusal.reason,
                    count,
                    wait,
                )
            with self._lock:
                self._refused.pop(0)
                self._sent.discard(outbox_id)

    def _reject_unpublishable(self, message: OutboxMessage, error: ValueError) -> None:
        """Remove and count (as rejected) a message the MQTT client refuses to publish (a topic over 65,535
        bytes, say): like one the broker refused for good, no retry mends it. A StoreError leaves it for
        the next round."""
        self._store.outbox.reject(message.message_id)
        self._refusals.pop(message.message_id, None)
        self._retry_at.pop(message.message_id, None)
        topic = message.topic if len(message.topic) <= 200 else f"{message.topic[:200]}…"
        log.warning(
            "outbox: message %d on %r (%d characters) cannot be published (%s): removed, counted as rejected",
            message.message_id,
            topic,
            len(message.topic),
            error,
        )

    def _send(self) -> None:
        with self._lock:
            if not self._connected:
                return
            generation = self._generation
            sent = set(self._sent)
            room = self._window - len(self._in_flight)
        if room <= 0:
            return
        now = self._clock()
        waiting = {outbox_id for outbox_id, due in self._retry_at.items() if due > now}
        messages = self._store.outbox.pending(len(sent) + len(waiting) + room)
        if messages:  # a refused message the outbox dropped (it was full) needs no more retries
            for gone in [outbox_id for outbox_id in self._retry_at if outbox_id < messages[0].message_id]:
                self._retry_at.pop(gone, None)
                self._refusals.pop(gone, None)
        for message in messages:
            if message.message_id in sent or message.message_id in waiting:
                continue
            try:
                mid = self._publish(message.topic, message.payload.encode(), message.qos)
            except ValueError as exc:  # MQTT cannot carry it at all: it must not hold up the rest
                self._reject_unpublishable(message, exc)
                continue
            if mid is None:
                return
            with self._lock:
                if self._generation != generation:
                    return  # the connection dropped meanwhile: the message stays queued and is resent
                self._sent.add(message.message_id)
                early = self._early.pop(mid, None)
                if early is not None and self._clock() - early[0] < EARLY_OUTCOME_S:
                    self._settle(message.message_id, early[1])
                    self._wake.set()  # to delete it (or handle its refusal) on the next round, at once
                else:
                    self._in_flight[mid] = (message.message_id, self._clock())
            room -= 1
            if room <= 0:
                return

    def _check_stalled(self) -> None:
        """Call stalled() when the oldest message in flight has waited ack_timeout_s for its answer (once
        per connection: the disconnect that follows clears what is in flight)."""
        if self._ack_timeout_s is None or self._stalled is None:
            return
        with self._lock:
            if not self._connected or not self._in_flight or self._stalled_generation == self._generation:
                return
            _, sent_at = next(iter(self._in_flight.values()))
            generation = self._generation
        waited = self._clock() - sent_at
        if waited < self._ack_timeout_s:
            return
        self._stalled_generation = generation
        self._stalled(waited)
