"""Emptying an SQLite write-ahead log after erasing data, without waiting for readers (the stores of the
agent and the server both erase faces this way)."""

from __future__ import annotations

import sqlite3


def empty_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> bool:
    """Copy the WAL into the database file and truncate it, now or not at all: True when emptied, False when
    another connection's read kept it (its frames, the pages as they were, stay until a later checkpoint).
    The connection's busy timeout (ms) is set back afterwards; sqlite3.Error as raised."""
    conn.execute("PRAGMA busy_timeout = 0")  # never hold the caller and its other writers up behind a reader
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return not busy
