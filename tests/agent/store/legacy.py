"""Stores as earlier FaceFleet versions wrote them: migrated by sqlite-utils (set "facefleet-agent-store",
migrations "0001_initial" then "0002_sync", PRAGMA user_version set to their count), with the historical
SQL of those migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database, Migrations

from facefleet.agent.store.migrations import INITIAL, SYNC

LEGACY_STEPS = (("0001_initial", INITIAL), ("0002_sync", SYNC))


def make_legacy_store(path: Path, upto: int) -> Database:
    """A store at the first `upto` sqlite-utils migrations; the caller adds rows, then commits and closes."""
    migrations = Migrations("facefleet-agent-store")
    for name, statements in LEGACY_STEPS[:upto]:

        def migrate(db: Database, statements: tuple[str, ...] = statements) -> None:
            for statement in statements:
                db.execute(statement)

        migrations(name=name)(migrate)
    db = Database(sqlite3.connect(path))
    migrations.apply(db)
    db.execute(f"PRAGMA user_version = {upto}")
    return db
