"""`facefleet-server state migrate --to postgresql://…`: copy an SQLite state into an empty PostgreSQL
database, table by table in one transaction, then compare the row counts of every table.

Rows keep their ids (people's embeddings and crops, rollouts, audit entries), so references between tables
hold and cursors stay valid; identity sequences then continue after the largest id. Event partitions are
created for every month the events span. The SQLite state is only read, and can be copied while no server
writes to it (stop the server first: events reported during the copy would be missing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from facefleet.server.errors import FailedPreconditionError, StateError
from facefleet.server.state.postgres import schema
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sql.state import SqlState

TABLES = (
    "meta",
    "people",
    "person_groups",
    "embeddings",
    "crops",
    "gallery_changes",
    "agents",
    "tokens",
    "events",
    "event_rollup_day",
    "event_rollup_hour",
    "event_attribute_cells_day",
    "event_attribute_cells_hour",
    "models",
    "rollouts",
    "rollout_devices",
    "agent_groups",
    "agent_model_statuses",
    "admin_audit",
    "devices",
    "device_certificates",
    "snapshots",
)
"""Every table of the state, parents before the tables that reference them."""
IDENTITIES = (("embeddings", "id"), ("crops", "id"), ("rollouts", "rollout_id"), ("admin_audit", "id"))
CHUNK = 2000


@dataclass(frozen=True)
class Copied:
    """Rows per table in the source and, after the copy, in the target."""

    source: dict[str, int]
    target: dict[str, int]

    @property
    def equal(self) -> bool:
        return self.source == self.target


def copy_state(
    source: SqlState, target: PostgresState, *, progress: Callable[[str, int], None] | None = None
) -> Copied:
    """Copy every row of `source` into the empty `target`; FailedPreconditionError when the target holds
    people, events, tokens, agents or models already, StateError when the counts differ afterwards."""
    with target.connection() as conn:
        for table in ("people", "events", "tokens", "agents", "models", "admin_audit"):
            if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():  # noqa: S608
                raise FailedPreconditionError(
                    f"{target.where} already holds {table}; migrate into a new, empty database"
                )
    with source.read() as read:
        counts = {t: int(read.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}  # noqa: S608
        span = read.execute("SELECT MIN(time_us), MAX(time_us) FROM events").fetchone()
        with target._raw() as raw, raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (schema.MIGRATION_LOCK,))
            if span[0] is not None:
                for year, month in _months(int(span[0]), int(span[1])):
                    schema.create_partition(raw, year, month)
            raw.execute("DELETE FROM meta")
            for table in TABLES:
                columns = _target_columns(raw, table)
                listed = ", ".join(columns)
                insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                )
                cursor = read.execute(f"SELECT {listed} FROM {table}")  # noqa: S608
                copied = 0
                with raw.cursor() as out:
                    while rows := cursor.fetchmany(CHUNK):  # type: ignore[attr-defined]
                        out.executemany(insert, [tuple(_value(v) for v in row) for row in rows])
                        copied += len(rows)
                        if progress is not None:
                            progress(table, copied)
            for table, column in IDENTITIES:
                raw.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({}, {}), COALESCE(MAX({}), 0) + 1, false) "
                        "FROM {}"
                    ).format(
                        sql.Literal(table), sql.Literal(column), sql.Identifier(column), sql.Identifier(table)
                    )
                )
    with target.read() as conn:
        after = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES}  # noqa: S608
    result = Copied(counts, after)
    if not result.equal:
        differ = ", ".join(f"{t} {counts[t]} → {after[t]}" for t in TABLES if counts[t] != after[t])
        raise StateError(f"the copy into {target.where} has other row counts ({differ})")
    return result


def _target_columns(raw: object, table: str) -> list[str]:
    """The target table's columns, in order (the SQLite events table has an extra rowid alias `id`)."""
    rows = raw.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _value(value: object) -> object:
    return bytes(value) if isinstance(value, memoryview) else value


def _months(lo_us: int, hi_us: int) -> list[tuple[int, int]]:
    year, month = schema.month_of(lo_us)
    last = schema.month_of(hi_us)
    months = []
    while (year, month) <= last:
        months.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months
