"""Keyset paging of events, face snapshots and audit entries (newest first) on both backends: every row once,
in order, across equal times; and a later page starts at its cursor in the index, whatever its depth: the
cursor is a bound of the (time_us, id) index (PostgreSQL's Index Cond, SQLite's SEARCH), not a filter over
every newer row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import cv2
import numpy as np

from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.server.domain.audit import AuditEntry, AuditFilter
from facefleet.server.domain.queries import EventFilter
from facefleet.server.domain.snapshots import SnapshotFilter
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sql.meta import Connection
from facefleet.server.state.sqlite.state import SqliteState

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
State = SqliteState | PostgresState


class Recording:
    """A connection that keeps the statements it runs."""

    def __init__(self, conn: Connection, seen: list[tuple[str, Any]]) -> None:
        self.conn, self.seen = conn, seen

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        self.seen.append((sql, parameters))
        return self.conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.conn.executemany(sql, parameters)


def listing_sql(state: State, call: Callable[[], object]) -> tuple[str, Any]:
    """The statement of a listing (the one ordered newest first) that `call` sends."""
    seen: list[tuple[str, Any]] = []
    plain = state.connection

    @contextmanager
    def recording() -> Iterator[Recording]:
        with plain() as conn:
            yield Recording(conn, seen)

    state.connection = recording  # type: ignore[method-assign]
    try:
        call()
    finally:
        del state.connection
    (found,) = [(sql, params) for sql, params in seen if "ORDER BY time_us DESC" in sql]
    return found


def index_bounds(state: State, sql: str, params: Any) -> list[str]:
    """Each index scan's bound in the plan of a statement: PostgreSQL's Index Cond (sequential and bitmap
    scans off, so that a table this small is read by an index at all), SQLite's SEARCH details."""
    if isinstance(state, SqliteState):
        with state.connection() as conn:
            return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]
    with state.read() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    bounds: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Cond" in node:
            bounds.append(f"{node['Index Name']} {node['Index Cond']} filter: {node.get('Filter', '')}")
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return bounds


def assert_cursor_bounds_the_index(state: State, sql: str, params: Any, index: str, id_column: str) -> None:
    """On SQLite `(time_us,id)<(?,?)` in the SEARCH; on PostgreSQL the row comparison in each partition's
    Index Cond and no filter left on the id. SQLite bounds an index by its rowid (the audit log's id) as
    such, not in a row value: there the index is bound by the cursor's time (derived from the row value, or
    the `time_us <= ?` beside it), and the range's end (`time_us < ?`) is not in the statement to bound it
    instead."""
    bounds = index_bounds(state, sql, params)
    assert bounds, "no index scan"
    for bound in bounds:
        assert index in bound
        head, _, rest = bound.partition(" filter: ")
        if isinstance(state, SqliteState) and id_column == "id":
            assert "time_us<?" in head and "time_us < ?" not in sql, (bound, sql)
            continue
        assert f"(time_us,{id_column})<(?,?)" in head.replace(" ", "") or (
            f"ROW(time_us, {id_column}) <" in head and id_column not in rest
        ), bound


def test_event_pages_walk_every_event_once_and_start_at_their_cursor_in_the_index(state: State) -> None:
    # three events per second: pages end between equal times
    events = [Event(str(uuid.UUID(int=i)), "door-1", NOW + timedelta(seconds=i // 3), "face", "unknown")
              for i in range(600)]  # fmt: skip
    state.add_events(events)
    everything = EventFilter(NOW - timedelta(days=1), NOW + timedelta(days=1))
    walked, cursor, pages = [], None, []
    while True:
        page = state.list_events(everything, cursor, 50)
        walked += [e.event_id for e in page.events]
        pages.append(cursor)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    newest_first = sorted(events, key=lambda e: (e.time, e.event_id), reverse=True)
    assert walked == [e.event_id for e in newest_first]
    # a cursor past the end of a narrower range: that range's end bounds it
    narrower = EventFilter(NOW, NOW + timedelta(seconds=20))
    assert [e.event_id for e in state.list_events(narrower, pages[1], 100).events] == [
        e.event_id for e in newest_first if e.time < narrower.end
    ]

    deep = pages[8]  # 400 events newer than it
    sql, params = listing_sql(state, lambda: state.list_events(everything, deep, 50))
    index = "events_time" if isinstance(state, SqliteState) else "events_"
    assert_cursor_bounds_the_index(state, sql, params, index, "event_id")


def test_snapshot_pages_walk_every_snapshot_once_and_start_at_their_cursor_in_the_index(state: State) -> None:
    crop = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1].tobytes()
    snapshot = FaceSnapshot(
        crop, b"", Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128), 0.8)
    )
    events = [Event(str(uuid.UUID(int=i)), "door-1", NOW + timedelta(seconds=i // 2), "face", "unknown",
                    camera="porch", snapshot=snapshot) for i in range(120)]  # fmt: skip
    state.add_events(events)
    everything = SnapshotFilter(NOW - timedelta(days=1), NOW + timedelta(days=1))
    walked, cursor, pages = [], None, []
    while True:
        page = state.snapshots.list_snapshots(everything, cursor, 15)
        walked += [s.event_id for s in page.snapshots]
        pages.append(cursor)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == [e.event_id for e in sorted(events, key=lambda e: (e.time, e.event_id), reverse=True)]

    sql, params = listing_sql(state, lambda: state.snapshots.list_snapshots(everything, pages[5], 15))
    assert_cursor_bounds_the_index(state, sql, params, "snapshots_time", "event_id")


def test_audit_pages_start_at_their_cursor_in_the_index(state: State) -> None:
    for i in range(120):
        state.add_audit(AuditEntry(NOW + timedelta(seconds=i // 4), "ops", "people.enrol", f"p{i}"))
    everything = AuditFilter(NOW - timedelta(days=1), NOW + timedelta(days=1))
    walked, cursor, pages = [], None, []
    while True:
        page = state.list_audit(everything, cursor, 15)
        walked += [e.target for e in page.entries]
        pages.append(cursor)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == [f"p{i}" for i in reversed(range(120))]

    sql, params = listing_sql(state, lambda: state.list_audit(everything, pages[5], 15))
    assert_cursor_bounds_the_index(state, sql, params, "admin_audit_time", "id")
