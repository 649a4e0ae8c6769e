"""PostgreSQL writes and event ingest on a database whose default isolation is REPEATABLE READ (a common
site policy): a write that waited for another one still commits, because the state runs its writes READ
COMMITTED whatever the default."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest

from facefleet.link.events import Event
from facefleet.link.gallery import Embedding, Person
from facefleet.server.state.postgres.state import WRITE_LOCK, PostgresState
from tests.postgres import PostgresCluster

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def repeatable_read(postgres_cluster: PostgresCluster) -> Iterator[tuple[str, PostgresState]]:
    """A migrated database whose sessions start REPEATABLE READ, and the state of one replica on it."""
    url = postgres_cluster.create_database()
    PostgresState(url, pool_size=1).close()
    with psycopg.connect(url, autocommit=True) as conn:
        name = url.rsplit("/", 1)[1]
        conn.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'")  # type: ignore[call-overload]
    state = PostgresState(url, pool_size=2)
    try:
        yield url, state
    finally:
        state.close()


def after_a_wait(url: str, hold: str, waiting_for: str, call: Callable[[], object]) -> None:
    """Run `hold` in a transaction of another session, start `call` in a thread, commit once the call waits
    for a lock of type `waiting_for` (pg_locks.locktype), and re-raise what the call raised."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            failed.append(exc)

    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as observer:
        holder.execute(hold)  # type: ignore[arg-type]
        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 20  # guards against a hung test only
        query = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = %s"
        while (observer.execute(query, (waiting_for,)).fetchone() or (0,))[0] == 0:
            assert worker.is_alive() and time.monotonic() < deadline, "the call never waited"
            time.sleep(0.01)
        holder.commit()
        worker.join(20)
    if failed:
        raise failed[0]


def test_a_gallery_write_that_waited_for_another_replica_commits(
    repeatable_read: tuple[str, PostgresState],
) -> None:
    url, state = repeatable_read
    vector = np.ones(128, np.float32) / np.sqrt(128)
    person = Person("alice", embeddings=(Embedding("sface@2021dec", vector, 0.9, "image:0"),))
    # another replica's write holds the lock and moves the gallery head
    hold = (
        f"SELECT pg_advisory_xact_lock({WRITE_LOCK}); "
        "UPDATE meta SET value = (value::int + 1)::text WHERE key = 'head_revision'"
    )
    after_a_wait(url, hold, "advisory", lambda: state.add_person(person, (), NOW))
    assert state.head_revision() == 2
    assert state.get_person("alice").revision == 2


def test_events_ingested_while_another_replica_counts_the_same_hour_are_counted(
    repeatable_read: tuple[str, PostgresState],
) -> None:
    url, state = repeatable_read

    def face(when: datetime) -> Event:
        return Event(str(uuid.uuid4()), "door-1", when, "face", "unknown")

    state.add_events([face(NOW)])
    # another replica's ingest has counted an event of the same day and hour, not yet committed
    hold = "UPDATE event_rollup_day SET n = n + 1; UPDATE event_rollup_hour SET n = n + 1"
    after_a_wait(url, hold, "transactionid", lambda: state.add_events([face(NOW + timedelta(seconds=1))]))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT n FROM event_rollup_day").fetchall() == [(3,)]
