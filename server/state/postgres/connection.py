"""The shared SQL (facefleet.server.state.sql) on a psycopg 3 connection: `?` placeholders become `%s` and a
literal `%` becomes `%%`, once per distinct statement. The shared SQL keeps `?` out of its string literals,
so the translation is a plain substitution."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """SQLite-style `?` placeholders as psycopg's `%s`."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that takes the shared SQL (facefleet.server.state.sql.meta.Connection)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(translate(sql), _params(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        rows = [_params(row) for row in parameters]
        if rows:
            cursor.executemany(translate(sql), rows)
        return cursor


def _params(parameters: Any) -> Sequence[Any]:
    """psycopg wants a sequence; memoryview and bytearray as bytes."""
    return [bytes(p) if isinstance(p, (memoryview, bytearray)) else p for p in parameters]
