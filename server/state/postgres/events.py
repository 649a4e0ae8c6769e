"""Event rows on PostgreSQL as one statement text whatever the batch size: the ids as one array
(`= ANY(?)`) and each column as one array parameter (`unnest`). A statement of 500 rows × 20 columns as
placeholders would be parsed again by psycopg on every call (it caches statements of at most 50
parameters) and planned again by PostgreSQL; these are parsed and planned once."""

from __future__ import annotations

from collections.abc import Sequence

from facefleet.server.state.postgres.schema import EVENT_COLUMNS_DDL
from facefleet.server.state.sql.events import COLUMNS
from facefleet.server.state.sql.meta import Connection

ARRAY_TYPES = {"TEXT": "text[]", "BIGINT": "bigint[]", "DOUBLE": "float8[]"}
"""The array type of each column type of the events table (DOUBLE: DOUBLE PRECISION)."""


def column_arrays() -> tuple[str, ...]:
    """The array type of each events column, in the order of facefleet.server.state.sql.events.COLUMNS."""
    types = {}
    for definition in EVENT_COLUMNS_DDL.split(","):
        name, kind = definition.split()[:2]
        types[name] = ARRAY_TYPES[kind]
    return tuple(types[name.strip()] for name in COLUMNS.split(","))


_INSERT = (
    f"INSERT INTO events ({COLUMNS}) "  # noqa: S608 (column names and types are the schema's own)
    f"SELECT * FROM unnest({', '.join(f'?::{kind}' for kind in column_arrays())}) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


class ArrayRows:
    """facefleet.server.state.sql.events.EventRows with array parameters."""

    def stored(self, conn: Connection, ids: Sequence[str]) -> dict[str, str]:
        rows = conn.execute(
            "SELECT event_id, device_id FROM events WHERE event_id = ANY(?::text[])", (list(ids),)
        )
        return {row[0]: row[1] for row in rows.fetchall()}

    def insert(self, conn: Connection, rows: Sequence[tuple[object, ...]]) -> set[str]:
        columns = [list(column) for column in zip(*rows, strict=True)]
        return {row[0] for row in conn.execute(_INSERT, columns).fetchall()}
