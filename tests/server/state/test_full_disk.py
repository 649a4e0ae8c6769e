"""The SQLite state on a real full disk (a small tmpfs): a write fails with RESOURCE_EXHAUSTED naming the
database and the fix, stores nothing, reads go on, and the next write after space returns succeeds."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facefleet.link.fleet import Registration
from facefleet.server.domain.records import Crop
from facefleet.server.errors import ResourceExhaustedError
from facefleet.server.state.sqlite.state import SqliteState
from tests.server.state.test_state import NOW, person
from tests.tmpfs import fill, mounted_tmpfs

ATTEMPTS = 50
"""Writes tried on a full disk before the test gives up: one usually fails at once, but a write may fit in
WAL frames that SQLite reuses after a checkpoint."""
BIG_CROP = Crop("png", os.urandom(3 << 20), "image:big")
"""Larger than SQLite's page cache, so the INSERT itself spills to the WAL and fails, before any COMMIT."""

Write = Callable[[SqliteState, int], object]
WRITES: dict[str, Write] = {
    "add_person fails at commit": lambda state, i: state.add_person(person(f"p{i}", i), [], NOW),
    "add_person fails mid-insert": lambda state, i: state.add_person(person(f"p{i}", i), [BIG_CROP], NOW),
    "register_agent": lambda state, i: state.register_agent(Registration(f"door-{i}", "0.1"), NOW),
}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root to mount), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small-disk", "4m") as mount_point:
        yield mount_point


@pytest.fixture
def state(small_disk: Path) -> Iterator[SqliteState]:
    state = SqliteState(small_disk / "server.db")
    yield state
    state.close()


def fail_for_space(state: SqliteState, write: Write) -> ResourceExhaustedError:
    """Try write until the full disk refuses it; the error."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            write(state, attempt)
        except ResourceExhaustedError as exc:
            return exc
    pytest.fail(f"{ATTEMPTS} writes on a full disk all succeeded")


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_full_disk_refuses_the_write_naming_the_database_and_recovers_when_space_returns(
    state: SqliteState, small_disk: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    write = WRITES[name]
    state.add_person(person("ada", 1), [], NOW)
    filler = fill(small_disk)
    with caplog.at_level(logging.WARNING):
        error = fail_for_space(state, write)
    database = str(small_disk / "server.db")
    assert error.status == "RESOURCE_EXHAUSTED"
    assert f"free space on the disk holding {database}" in str(error)
    assert " free there)" in str(error)
    stored = state.list_people()  # reads go on, and show nothing of the refused write
    revision = state.head_revision()
    assert [p.person_id for p in stored] == ["ada"] + [f"p{i}" for i in range(1, revision)]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("WARNING", str(error), None)
    ]

    filler.unlink()
    write(state, ATTEMPTS + 1)
    state.add_person(person("bob", 2), [], NOW)
    assert state.get_person("bob").revision == state.head_revision()
    assert state.get_person("ada").embeddings[0].model_id == "sface@2021dec"
