"""The store's MQTT outbox: messages committed before they are published and deleted once the broker
acknowledges them, oldest first, bounded (the oldest are dropped, counted and logged when it is full)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from facefleet.agent.domain.records import InvalidRecordError, OutboxMessage
from facefleet.agent.store.connection import StoreConnection, add_to_counter, drop_oldest

DEFAULT_OUTBOX_LIMIT = 10_000
OUTBOX_DROPPED = "outbox_dropped"
"""Counter of outbox messages dropped (oldest first) because the outbox was full."""
OUTBOX_REJECTED = "outbox_rejected"
"""Counter of outbox messages the broker can never take (an invalid topic or payload), removed."""


class Outbox:
    """Queued MQTT messages; `limit`: how many may wait before the oldest are dropped."""

    def __init__(self, connection: StoreConnection, limit: int = DEFAULT_OUTBOX_LIMIT) -> None:
        if limit < 1:
            raise InvalidRecordError(f"outbox_limit must be at least 1, got {limit}")
        self._connection = connection
        self.limit = limit

    def put(
        self, topic: str, payload: str, qos: int = 1, *, same_kind_limit: int | None = None
    ) -> int | None:
        """Queue a message; the id. When the outbox is over its limit, the oldest messages are dropped and
        counted in the OUTBOX_DROPPED counter (and logged). same_kind_limit: queue it only while fewer
        messages of its kind (the topic's first level, e.g. 'replies/') wait, else None: a flood of one kind
        cannot push the others out."""
        with self._connection.write() as conn:
            return self.add(conn, topic, payload, qos, same_kind_limit=same_kind_limit)

    def add(
        self,
        conn: sqlite3.Connection,
        topic: str,
        payload: str,
        qos: int = 1,
        *,
        same_kind_limit: int | None = None,
    ) -> int | None:
        """put() inside the caller's write transaction (e.g. with the event's report,
        EmbeddingStore.queue_event)."""
        if not topic or not isinstance(topic, str) or not isinstance(payload, str):
            raise InvalidRecordError(
                f"outbox message needs a non-empty topic and a text payload, got {topic!r}"
            )
        if qos not in (0, 1, 2):
            raise InvalidRecordError(f"MQTT qos must be 0, 1 or 2, got {qos!r}")
        if same_kind_limit is not None:
            kind = topic.split("/", 1)[0] + "/"
            (waiting,) = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE substr(topic, 1, ?) = ?", (len(kind), kind)
            ).fetchone()
            if waiting >= same_kind_limit:
                return None
        cursor = conn.execute(
            "INSERT INTO outbox (topic, payload, qos, created_at) VALUES (?, ?, ?, ?)",
            (topic, payload, qos, time.time()),
        )
        message_id = int(cursor.lastrowid or 0)
        drop_oldest(conn, "outbox", self.limit, OUTBOX_DROPPED, self._connection.path)
        return message_id

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        """The oldest queued messages, oldest first."""
        with self._connection.read() as conn:
            rows = conn.execute(
                "SELECT id, topic, payload, qos, created_at FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def delete(self, message_id: int) -> bool:
        """Remove a delivered message; False when it was already gone."""
        with self._connection.write() as conn:
            return conn.execute("DELETE FROM outbox WHERE id = ?", (message_id,)).rowcount > 0

    def delete_many(self, message_ids: Sequence[int]) -> int:
        """Remove delivered messages in one transaction; how many were still there."""
        if not message_ids:
            return 0
        with self._connection.write() as conn:
            cursor = conn.executemany("DELETE FROM outbox WHERE id = ?", [(int(i),) for i in message_ids])
            return int(cursor.rowcount)

    def reject(self, message_id: int) -> bool:
        """Remove a message the broker refused for good and count it in OUTBOX_REJECTED, in one
        transaction; False when it was already gone."""
        with self._connection.write() as conn:
            gone = conn.execute("DELETE FROM outbox WHERE id = ?", (message_id,)).rowcount > 0
            if gone:
                add_to_counter(conn, OUTBOX_REJECTED, 1)
            return gone

    def rejected(self) -> int:
        """How many messages the broker refused for good, since the store was created."""
        return self._connection.counter(OUTBOX_REJECTED)

    def clear(self, conn: sqlite3.Connection) -> int:
        """Delete every queued message inside the caller's write transaction (a wipe, not a drop: nothing
        is counted); how many."""
        return int(conn.execute("DELETE FROM outbox").rowcount)

    def count(self) -> int:
        with self._connection.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dropped(self) -> int:
        """How many messages were dropped because the outbox was full, since the store was created."""
        return self._connection.counter(OUTBOX_DROPPED)
