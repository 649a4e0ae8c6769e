"""Fixtures of the state tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sqlite.state import SqliteState

BackendState = SqliteState | PostgresState


@pytest.fixture(params=("postgresql", "sqlite"))
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendState]:
    """A new state on each backend: a fresh database of the session's PostgreSQL cluster, or SQLite in
    tmp_path. A module's own `state` fixture takes its place there."""
    made: BackendState
    if request.param == "postgresql":
        made = PostgresState(request.getfixturevalue("postgres_cluster").create_database(), pool_size=2)
    else:
        made = SqliteState(tmp_path / "server.db")
    yield made
    made.close()
