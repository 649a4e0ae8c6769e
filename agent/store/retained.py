"""The full MQTT topics the agent has published retained messages on (Home Assistant discovery configs, the
cameras' states and face crops), so that it can remove those it no longer configures: the broker keeps a
retained message until an empty retained message replaces it. The table is the store's migration 6."""

from __future__ import annotations

from collections.abc import Iterable

from facefleet.agent.store.connection import StoreConnection


class RetainedTopics:
    """The retained topics of one store: remembered before the agent publishes on them, forgotten once the
    broker has acknowledged their removal."""

    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    def topics(self) -> set[str]:
        with self._connection.read() as conn:
            return {row[0] for row in conn.execute("SELECT topic FROM mqtt_retained")}

    def remember(self, topics: Iterable[str]) -> None:
        """Add topics (those already remembered stay as they are), in one transaction."""
        rows = [(topic,) for topic in topics]
        if rows:
            with self._connection.write() as conn:
                conn.executemany("INSERT OR IGNORE INTO mqtt_retained (topic) VALUES (?)", rows)

    def forget(self, topics: Iterable[str]) -> None:
        """Remove topics, in one transaction."""
        rows = [(topic,) for topic in topics]
        if rows:
            with self._connection.write() as conn:
                conn.executemany("DELETE FROM mqtt_retained WHERE topic = ?", rows)
