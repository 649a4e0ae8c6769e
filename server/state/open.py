"""The state a server opens, chosen by `[state] url` (facefleet.server.config.StateConfig)."""

from __future__ import annotations

from pathlib import Path

from facefleet.server.state.interface import State


def open_state(url: str, database: Path, *, log_revisions: int, pool_size: int) -> State:
    """'' → the SQLite file `database` (the state directory's); 'sqlite:///PATH' → that SQLite file;
    'postgresql://…' → PostgreSQL (facefleet.server.state.postgres; imported only then)."""
    if url.startswith(("postgresql://", "postgres://")):
        from facefleet.server.state.postgres.state import PostgresState

        return PostgresState(url, log_revisions=log_revisions, pool_size=pool_size)
    from facefleet.server.state.sqlite.state import SqliteState

    path = Path(url.removeprefix("sqlite://")) if url.startswith("sqlite:///") else database
    return SqliteState(path, log_revisions=log_revisions)
