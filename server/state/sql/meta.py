"""What the SQL state implementations lend their row-level companions (facefleet.server.state.sql): a
connection, read and write transactions, and counters kept in the meta table.

The companions' SQL runs unchanged on SQLite and PostgreSQL: `?` placeholders (the PostgreSQL connection
translates them), `ON CONFLICT` upserts, `RETURNING`, no engine-specific functions. Only the schemas differ
(facefleet.server.state.sqlite.schema, facefleet.server.state.postgres.schema)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from facefleet.server.domain.paging import PageSeal


class Cursor(Protocol):
    """The DB-API cursor a statement returns: rows as tuples, and rowcount after a change."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class Connection(Protocol):
    """A connection inside a transaction: sqlite3.Connection, or the PostgreSQL adapter
    (facefleet.server.state.postgres.connection.PgConnection)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


EXPIRE_BATCH_ROWS = 2000
"""Rows retention deletes per write transaction (events, face snapshots): the write lock is let go between
batches, so ingest and the other writes wait for one batch at most, not for a whole day of rows."""

NEW_GALLERY_SQL = "UPDATE meta SET value = ? WHERE key = 'gallery_id'"
"""A restored database gets a gallery id of its own: its revisions go back in time, and an agent that held
a later revision of the same id would otherwise resume from it once the numbers catch up, keeping people the
server no longer has and missing those it now has. With a new id, every agent takes a whole snapshot."""


class Transactions(Protocol):
    """A state's connection (one statement, no transaction of its own) and its read and write
    transactions."""

    def connection(self) -> AbstractContextManager[Connection]: ...

    def read(self) -> AbstractContextManager[Connection]: ...

    def write(self) -> AbstractContextManager[Connection]: ...

    def erased(self) -> None: ...


def counter(conn: Connection, key: str) -> int:
    """A counter kept in the meta table (0 before its first bump)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def bump(conn: Connection, key: str) -> None:
    """Move a meta counter on by one (64-bit on every database), inside the caller's write transaction."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, '1') "
        "ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)",
        (key,),
    )


def get_meta(conn: Connection, key: str, default: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def set_meta(conn: Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


PAGE_KEY = "page_token_key"
"""The meta key of the secret that seals page tokens (facefleet.server.domain.paging)."""


def add_page_key(conn: Connection) -> str:
    """The state's page-token key, made now (inside the caller's write transaction) if it has none: by the
    first server that opens the state, or the first to commit of two opening it at once."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (PAGE_KEY, secrets.token_urlsafe(32)),
    )
    return get_meta(conn, PAGE_KEY, "")


def page_seal(core: Transactions) -> PageSeal:
    """The state's page-token seal. Its key is made once, when a server first opens the state
    (SqlState._start_gallery), and kept in the meta table: every replica on the database reads the same one,
    and a restart keeps it. Read at each listing (one row by key), so a state restored from a backup is
    sealed with the key the backup holds; made here only if the state lost it (copied from a database that
    had none while a server had it open)."""
    with core.connection() as conn:
        key = get_meta(conn, PAGE_KEY, "")
    if not key:
        with core.write() as conn:
            key = add_page_key(conn)
    return PageSeal(key)
