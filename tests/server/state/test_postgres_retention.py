"""Retention on a real PostgreSQL (the session's throwaway cluster): a month whose rollup partitions are
missing (a database migrated from schema 1) still expires with the right count; a month whose tables are in
use (a long reader) is left whole for the next run instead of queueing ingest behind the wait; the catalogue
is read in the current schema only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import psycopg
import pytest

from facefleet.server.domain.queries import EventFilter
from facefleet.server.state.postgres import state as postgres_state
from facefleet.server.state.postgres.schema import PARTITIONED, expired_tables, partitions
from facefleet.server.state.postgres.state import PostgresState
from tests.postgres import PostgresCluster
from tests.server.state.test_state import make_event

EVERYTHING = EventFilter(
    datetime(2025, 12, 1, tzinfo=timezone.utc), datetime(2026, 6, 1, tzinfo=timezone.utc)
)


def utc(year: int, month: int, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=timezone.utc)


@pytest.fixture
def url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.create_database()


@pytest.fixture
def state(url: str) -> Iterator[PostgresState]:
    opened = PostgresState(url, pool_size=2)
    yield opened
    opened.close()


def terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def month_partitions(state: PostgresState, table: str = "events") -> list[str]:
    with state._raw() as raw:
        return [name for name, *_ in partitions(raw, table)]


@pytest.mark.parametrize("events_in_february", [0, 7])
def test_a_month_without_its_rollup_partitions_expires_counted_from_its_events(
    state: PostgresState, url: str, events_in_february: int
) -> None:
    state.add_events([make_event(i, utc(2026, 1, 5)) for i in range(5)])
    state.add_events([make_event(100 + i, utc(2026, 2, 5)) for i in range(events_in_february)])
    state.ensure_partitions({(2026, 2), (2026, 3)})
    state.add_events([make_event(200 + i, utc(2026, 3, 5)) for i in range(3)])
    with psycopg.connect(url, autocommit=True) as raw:  # as migration 2 leaves a month without rollup rows
        for table in PARTITIONED[1:]:
            raw.execute(f"DROP TABLE {table}_2026_02")  # type: ignore[call-overload]
    assert state.expire_events(utc(2026, 3)) == 5 + events_in_february
    assert month_partitions(state) == ["events_2026_03"]
    for table in PARTITIONED:
        assert month_partitions(state, table) == [f"{table}_2026_03"]
    with state._raw() as raw:
        assert expired_tables(raw) == []
    assert len(state.list_events(EVERYTHING, None, 100).events) == 3


def test_a_month_in_use_is_left_for_the_next_run_without_waiting_for_it(
    state: PostgresState, url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(postgres_state, "DETACH_LOCK_TIMEOUT_MS", 200)
    state.add_events([make_event(i, utc(2026, 1 + i % 3, 10)) for i in range(30)])
    with psycopg.connect(url) as reader:  # a long reader of January (pg_dump, a report)
        reader.execute("LOCK TABLE events_2026_01 IN ACCESS SHARE MODE")
        # (a retention that waited for the reader would hang the test: the reader goes after a minute)
        guard = threading.Timer(60, terminate, (url, reader.info.backend_pid))
        guard.start()
        try:
            with caplog.at_level(logging.WARNING, logger=postgres_state.__name__):
                assert state.expire_events(utc(2026, 3, 10)) == 10  # February whole; January left
        finally:
            guard.cancel()
        assert "2026-01 are in use" in caplog.text and "tries again at its next run" in caplog.text
        assert month_partitions(state) == ["events_2026_01", "events_2026_03"]
        reader.rollback()
    left = state.list_events(EVERYTHING, None, 100).events
    assert sorted({e.time.month for e in left}) == [1, 3] and len(left) == 20
    per_month = {c.start.month: c.count for c in state.count_events(EVERYTHING, 86400, per_device=False)}
    assert per_month == {1: 10, 3: 10}
    assert state.expire_events(utc(2026, 3, 10)) == 10
    assert month_partitions(state) == ["events_2026_03"]
    with state._raw() as raw:
        assert expired_tables(raw) == []
    assert len(state.list_events(EVERYTHING, None, 100).events) == 10


def test_partitions_are_those_of_the_current_schema(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute("CREATE SCHEMA other")
    other = PostgresState(f"{url}?options=-csearch_path%3Dother", pool_size=1)
    try:
        other.add_events([make_event(1, utc(2026, 2, 5))])
        public = PostgresState(url, pool_size=1)
        try:
            public.add_events([make_event(2, utc(2026, 1, 5))])
            assert month_partitions(public) == ["events_2026_01"]
            assert month_partitions(other) == ["events_2026_02"]
            assert public.expire_events(utc(2026, 3)) == 1
            assert month_partitions(other) == ["events_2026_02"]
        finally:
            public.close()
    finally:
        other.close()


def test_the_partial_month_is_deleted_without_waiting_for_the_write_lock(
    state: PostgresState, url: str
) -> None:
    """Deleting a day of events takes seconds on a busy fleet: it runs as ingest does, while a gallery write
    (which holds the write lock) goes on, instead of stalling every write behind it."""
    state.add_events([make_event(i, utc(2026, 3, 1 + i)) for i in range(10)])
    with psycopg.connect(url) as writer:  # a gallery write in progress
        writer.execute("SELECT pg_advisory_xact_lock(%s)", (postgres_state.WRITE_LOCK,))
        released: list[int] = []  # the writer ended after 20 s (so that a waiting retention fails, not hangs)
        guard = threading.Timer(
            20, lambda pid: (released.append(pid), terminate(url, pid)), (writer.info.backend_pid,)
        )
        guard.start()
        try:
            assert state.expire_events(utc(2026, 3, 6)) == 5
        finally:
            guard.cancel()
        assert released == []
        writer.rollback()
    left = state.list_events(EVERYTHING, None, 100).events
    assert sorted(e.time.day for e in left) == [6, 7, 8, 9, 10]
