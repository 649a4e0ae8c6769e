"""The state a server opens, chosen by `[state] url` (facefleet.server.config.StateConfig), and the lock a
serving process holds on it (facefleet.server.state.serving)."""

from __future__ import annotations

from pathlib import Path

from facefleet.server.state.interface import State
from facefleet.server.state.serving import FileServingLock, ServingLock


def on_postgres(url: str) -> bool:
    """Whether `[state] url` names a PostgreSQL database."""
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_database(url: str, database: Path) -> Path:
    """The SQLite file of a `[state] url` that is not PostgreSQL's: 'sqlite:///PATH' → PATH, '' →
    `database` (the state directory's)."""
    return Path(url.removeprefix("sqlite://")) if url.startswith("sqlite:///") else database


def open_state(
    url: str, database: Path, *, log_revisions: int, pool_size: int, upgrade: bool = True
) -> State:
    """'' → the SQLite file `database` (the state directory's); 'sqlite:///PATH' → that SQLite file;
    'postgresql://…' → PostgreSQL (facefleet.server.state.postgres; imported only then). upgrade=False: a
    new database is created, an older one refused untouched (StateOutdatedError)."""
    if on_postgres(url):
        from facefleet.server.state.postgres.state import PostgresState

        return PostgresState(url, log_revisions=log_revisions, pool_size=pool_size, upgrade=upgrade)
    from facefleet.server.state.sqlite.state import SqliteState

    return SqliteState(sqlite_database(url, database), log_revisions=log_revisions, upgrade=upgrade)


def hold_serving(url: str, database: Path) -> ServingLock:
    """The lock a serving process holds on the state of `url` (as open_state chooses it) until it closes
    the lock; StateError while a restore or migration runs on it."""
    if on_postgres(url):
        from facefleet.server.state.postgres.serving import PgServingLock

        return PgServingLock(url)
    return FileServingLock(sqlite_database(url, database))
