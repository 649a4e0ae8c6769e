"""The store's access audit log: one entry per door decision (unix seconds, door, decision, person, score,
details), newest first when read, pruned by age, erased by a wipe."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from facefleet.agent.domain.records import AuditEntry, check_identifier, json_text
from facefleet.agent.store.connection import StoreConnection


class AuditLog:
    """The audit entries of one store."""

    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    def append(
        self,
        door: str,
        decision: str,
        *,
        person_id: str | None = None,
        score: float | None = None,
        details: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> int:
        """Record an access decision at a door (at: unix seconds, default now); the entry id."""
        check_identifier("door", door)
        check_identifier("decision", decision)
        details_json = json_text("audit details", dict(details or {}))
        with self._connection.write() as conn:
            cursor = conn.execute(
                "INSERT INTO audit_log (time, door, person_id, decision, score, details_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time() if at is None else at, door, person_id, decision, score, details_json),
            )
            return int(cursor.lastrowid or 0)

    def entries(self, limit: int = 100) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        with self._connection.read() as conn:
            rows = conn.execute(
                "SELECT id, time, door, decision, person_id, score, details_json FROM audit_log "
                "ORDER BY time DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            AuditEntry(entry_id, at, door, decision, person_id, score, json.loads(details))
            for entry_id, at, door, decision, person_id, score, details in rows
        ]

    def clear(self, conn: sqlite3.Connection) -> int:
        """Delete every entry inside the caller's write transaction (a wipe); how many."""
        return int(conn.execute("DELETE FROM audit_log").rowcount)

    def prune(self, older_than: float) -> int:
        """Delete audit entries before a unix time (seconds); how many were deleted."""
        with self._connection.write() as conn:
            return int(conn.execute("DELETE FROM audit_log WHERE time < ?", (older_than,)).rowcount)
