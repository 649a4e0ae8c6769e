"""People search by id or name folds case in every script, on both backends: SQLite in a temporary folder
and PostgreSQL in a fresh database of the session's throwaway cluster (its default locale, often C)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from facefleet.link.gallery import Person
from facefleet.server.state.interface import State
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sqlite.state import SqliteState

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
NAMES = {
    "p1": "Ångström",
    "p2": "ÖZTÜRK Ayşe",
    "p3": "Ярослава Ковальчук",
    "p4": "ΣΩΚΡΑΤΗΣ",
    "p5": "Ｆｕｌｌ Ｗｉｄｔｈ",  # full-width letters: NFKC makes them "Full Width"
    "p6": "100％ sure",
    "p7": "Straße",
}


@pytest.fixture(params=("postgresql", "sqlite"))
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    opened: State
    if request.param == "postgresql":
        opened = PostgresState(request.getfixturevalue("postgres_cluster").create_database(), pool_size=2)
    else:
        opened = SqliteState(tmp_path / "server.db")
    try:
        for person_id, name in NAMES.items():
            opened.add_person(Person(person_id, display_name=name), [], NOW)
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("ångström", ["p1"]),
        ("ÅNGSTRÖM", ["p1"]),
        ("öztürk", ["p2"]),
        ("Öztürk", ["p2"]),
        ("ярослава", ["p3"]),
        ("ЯРОСЛАВА", ["p3"]),
        ("ковальчук", ["p3"]),
        ("σωκρ", ["p4"]),
        ("σωκρατης", ["p4"]),  # its last letter the final sigma, in lower case on both backends
        ("strasse", []),  # "Straße" in lower case keeps its ß on both backends
        ("full width", ["p5"]),
        ("ＦＵＬＬ", ["p5"]),
        ("%", ["p6"]),  # a full-width ％ is the per cent sign, searched for as itself
        ("％", ["p6"]),
        ("P1", ["p1"]),
    ],
)
def test_people_are_found_by_a_name_in_any_case_and_any_script(
    state: State, search: str, found: list[str]
) -> None:
    assert [p.person_id for p in state.list_people(search=search)] == found
