"""What SqliteState shares with its companions: its transactions, and counters in the meta table."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Protocol


class Transactions(Protocol):
    """What SqliteState lends its companions: its connection and its read and write transactions."""

    def connection(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def write(self) -> AbstractContextManager[sqlite3.Connection]: ...


def counter(conn: sqlite3.Connection, key: str) -> int:
    """A counter kept in the meta table (0 before its first bump)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def bump(conn: sqlite3.Connection, key: str) -> None:
    """Move a meta counter on by one, inside the caller's write transaction."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, '1') "
        "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        (key,),
    )
