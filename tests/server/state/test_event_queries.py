"""What the event queries read, on both backends: counts stop at the rows one answer holds (fetching one row
more at most), and filters no event can match (a kind with another kind's decision) are answered empty
without reading a row."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from facefleet.link.events import Event
from facefleet.server.domain.queries import EventFilter
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sql import events as sql_events
from facefleet.server.state.sql.meta import Connection
from facefleet.server.state.sqlite.state import SqliteState

T = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
State = SqliteState | PostgresState


class Fetched:
    """A cursor that notes how many rows were fetched from it."""

    def __init__(self, cursor: Any, sql: str, seen: list[tuple[str, int]]) -> None:
        self.cursor, self.sql, self.seen = cursor, sql, seen

    def fetchall(self) -> list[Any]:
        rows = list(self.cursor.fetchall())
        self.seen.append((self.sql, len(rows)))
        return rows

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self.cursor.rowcount)


class Recording:
    """A connection that notes every statement and the rows fetched by each."""

    def __init__(self, conn: Connection, seen: list[tuple[str, int]]) -> None:
        self.conn, self.seen = conn, seen

    def execute(self, sql: str, parameters: Any = (), /) -> Fetched:
        self.seen.append((sql, -1))
        return Fetched(self.conn.execute(sql, parameters), sql, self.seen)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.conn.executemany(sql, parameters)


@contextmanager
def recorded(state: State) -> Iterator[list[tuple[str, int]]]:
    """(statement, rows fetched, or -1 when run) of every statement the state reads with meanwhile."""
    seen: list[tuple[str, int]] = []
    plain = {name: getattr(state, name) for name in ("connection", "read")}

    def recording(opened: Callable[[], AbstractContextManager[Connection]]) -> Callable[[], Any]:
        @contextmanager
        def opens() -> Iterator[Recording]:
            with opened() as conn:
                yield Recording(conn, seen)

        return opens

    for name, opened in plain.items():
        setattr(state, name, recording(opened))
    try:
        yield seen
    finally:
        for name in plain:
            delattr(state, name)


def event(i: int, device: str, when: datetime, kind: str = "face", decision: str = "unknown") -> Event:
    return Event(str(uuid.UUID(int=i)), device, when, kind, decision)  # type: ignore[arg-type]


def test_counts_past_the_rows_one_answer_holds_are_refused_having_fetched_one_row_more_at_most(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 devices, an event at minutes 20 and 40 of six hours; the range leaves out the first and the last
    # 30 minutes, so its hourly counts come from the raw events at the edges and the hourly rollup between
    devices = ("door-1", "door-2", "door-3")
    state.add_events(
        [
            event(i, device, T + timedelta(hours=hour, minutes=minute))
            for i, (device, hour, minute) in enumerate(
                (d, h, m) for d in devices for h in range(6) for m in (20, 40)
            )
        ]
    )
    flt = EventFilter(T + timedelta(minutes=30), T + timedelta(hours=5, minutes=30))
    monkeypatch.setattr(sql_events, "MAX_COUNT_ROWS", 10)
    with recorded(state) as seen, pytest.raises(InvalidArgumentError) as refused:
        state.count_events(flt, 3600)
    message = str(refused.value)
    assert message.startswith(
        f"counts from {flt.start.isoformat()} to {flt.end.isoformat()} per 3600 s interval and device are "
        "more than 10 rows, the most one answer holds: ask with a longer interval_seconds or a shorter range"
    )
    assert "device_id" in message and "per_device=false" in message
    fetched = [rows for sql, rows in seen if rows >= 0 and "GROUP BY" in sql]
    assert fetched and max(fetched) <= 11

    assert len(state.count_events(flt, 3600, per_device=False)) == 6
    assert len(state.count_events(replace_devices(flt, "door-1"), 3600)) == 6
    monkeypatch.setattr(sql_events, "MAX_COUNT_ROWS", 18)
    counts = state.count_events(flt, 3600)
    assert len(counts) == 18 and sum(c.count for c in counts) == 3 * 10


def replace_devices(flt: EventFilter, *device_ids: str) -> EventFilter:
    return EventFilter(flt.start, flt.end, device_ids=device_ids)


def test_a_kind_with_another_kinds_decision_is_answered_empty_without_reading_events(state: State) -> None:
    state.add_events(
        [
            event(1, "door-1", T, "face", "unknown"),
            event(2, "door-1", T + timedelta(minutes=1), "access", "denied"),
            event(3, "door-1", T + timedelta(minutes=2), "access", "granted"),
        ]
    )
    span = (T - timedelta(days=3), T + timedelta(days=1))  # whole days: the rollups and the raw events

    def flt(kinds: tuple[str, ...] = (), decisions: tuple[str, ...] = ()) -> EventFilter:
        return EventFilter(*span, kinds=kinds, decisions=decisions)  # type: ignore[arg-type]

    nothing = flt(("access",), ("unknown",))
    with recorded(state) as seen:
        assert state.list_events(nothing, None, 100).events == ()
        assert state.count_events(nothing, 3600) == []
        assert state.access_summary(flt(decisions=("unknown", "match"))) == []  # access events only
        assert state.expression_counts(flt(decisions=("granted",)), per_device=True) == []  # face only
        assert state.unknown_rates(flt(decisions=("denied",))) == []
    tables = ("events", *(table for _, table in (*sql_events.ROLLUPS, *sql_events.ATTRIBUTE_ROLLUPS)))
    assert [sql for sql, _ in seen if any(f"FROM {table} " in sql for table in tables)] == []

    # a kind with one of its decisions, or several kinds, still match
    assert [e.event_id for e in state.list_events(flt(("access",), ("denied",)), None, 100).events] == [
        str(uuid.UUID(int=2))
    ]
    mixed = state.list_events(flt(("access", "face"), ("unknown", "granted")), None, 100).events
    assert [e.event_id for e in mixed] == [str(uuid.UUID(int=3)), str(uuid.UUID(int=1))]
    assert sum(c.count for c in state.count_events(flt(("access",), ("denied", "unknown")), 86400)) == 1
