"""Shipped migrations never change. Their SQL is partly built from live constants (the rollup tables, the
gender and age-band cells): a change there must come as a new migration, or databases migrated before it
and databases made after it would differ. Each step's statements are pinned by digest."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from facefleet.agent.store.migrations import MIGRATIONS as AGENT_STORE
from facefleet.server.state.postgres.schema import MIGRATIONS as POSTGRES
from facefleet.server.state.sqlite.schema import MIGRATIONS as SQLITE

SHIPPED = {
    "agent store": {
        1: ("initial", "10246e9e04d64001"),
        2: ("sync", "dc85b7b5aea19c2f"),
        3: ("typed_reports", "a95dad548601034f"),
        4: ("snapshots", "fac94acc69f2eebe"),
    },
    "server SQLite": {
        1: ("initial", "871cb0f77c778956"),
        2: ("models", "19253c76ef2a84ec"),
        3: ("rollout_reason", "07c6ddac3ca8507f"),
        4: ("rollout_failure_budget", "260e85f0788d72d9"),
        5: ("admin_audit", "765135b98e4385fa"),
        6: ("devices", "a30c855b00c1da7f"),
        7: ("snapshots", "548acf32ccc5be19"),
        8: ("event_camera_door_indexes", "a669df71ff4596f6"),
        9: ("event_attributes", "bb35af9df87bbd2a"),
        10: ("attribute_cells", "d22c4fddfad1753f"),
        11: ("agent_precisions", "33bb3cad5ce2b63f"),
    },
    "server PostgreSQL": {
        1: ("initial", "ea78df22c0e8d37e"),
        2: ("rollup partitions", "e289553d10802dbf"),
        3: ("attribute cells", "4bc23614560493dd"),
        4: ("agent precisions", "33bb3cad5ce2b63f"),
    },
}
"""Database kind → version → (name, the first 16 hex digits of the sha256 of its statements)."""


def digest(statements: Sequence[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("kind", "steps"),
    [
        ("agent store", AGENT_STORE.steps),
        ("server SQLite", SQLITE.steps),
        ("server PostgreSQL", POSTGRES),
    ],
)
def test_every_shipped_migration_is_as_it_shipped(kind: str, steps: Sequence[object]) -> None:
    current = {step.version: (step.name, digest(step.statements)) for step in steps}  # type: ignore[attr-defined]
    for version, shipped in SHIPPED[kind].items():
        assert current.get(version) == shipped, (
            f"{kind} migration {version} {shipped[0]!r} changed; a shipped migration is never edited: "
            "restore it and put the change in a new migration"
        )
