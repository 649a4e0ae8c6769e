"""The admin audit log in the state: append, filter by time, who and action prefix, page newest first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from facefleet.server.domain.audit import MAX_DETAIL_CHARS, AuditCursor, AuditEntry, AuditFilter
from facefleet.server.errors import InvalidArgumentError, NotFoundError
from facefleet.server.state.interface import State
from facefleet.server.state.sqlite.state import SqliteState

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
EVERYTHING = AuditFilter(T0 - timedelta(days=1), T0 + timedelta(days=1))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    state = SqliteState(tmp_path / "server.db")
    yield state
    state.close()


def seed(state: State) -> None:
    """Five entries a minute apart: ops enrols and deletes, local creates a token, ops is refused, the
    server pauses a rollout."""
    entries = (
        AuditEntry.of(T0, "ops", "people.enrol", "p1", None),
        AuditEntry.of(T0 + timedelta(minutes=1), "ops", "people.delete", "p1", None),
        AuditEntry.of(T0 + timedelta(minutes=2), "local", "tokens.create", "grafana", None),
        AuditEntry.of(
            T0 + timedelta(minutes=3),
            "ops",
            "people.delete",
            "p9",
            NotFoundError("person p9 is not enrolled"),
        ),
        AuditEntry(
            T0 + timedelta(minutes=4), "server", "rollouts.pause", "3", detail="stopped: 2 of 4 refused"
        ),
    )
    for entry in entries:
        state.add_audit(entry)


def test_entries_round_trip_newest_first_with_the_refusal_named(state: State) -> None:
    seed(state)
    entries = state.list_audit(EVERYTHING, None, 100).entries
    assert [(e.who, e.action, e.target, e.outcome) for e in entries] == [
        ("server", "rollouts.pause", "3", "ok"),
        ("ops", "people.delete", "p9", "NOT_FOUND"),
        ("local", "tokens.create", "grafana", "ok"),
        ("ops", "people.delete", "p1", "ok"),
        ("ops", "people.enrol", "p1", "ok"),
    ]
    assert entries[1].detail == "person p9 is not enrolled"
    assert entries[-1].time == T0
    assert len({e.entry_id for e in entries}) == 5


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (AuditFilter(T0, T0 + timedelta(minutes=2)), ["people.delete", "people.enrol"]),
        (
            AuditFilter(T0 - timedelta(days=1), T0 + timedelta(days=1), who="ops"),
            ["people.delete"] * 2 + ["people.enrol"],
        ),
        (
            AuditFilter(T0 - timedelta(days=1), T0 + timedelta(days=1), action="people.del"),
            ["people.delete"] * 2,
        ),
        (
            AuditFilter(T0 - timedelta(days=1), T0 + timedelta(days=1), who="local", action="tokens"),
            ["tokens.create"],
        ),
        (AuditFilter(T0 - timedelta(days=1), T0 + timedelta(days=1), who="nobody"), []),
        (AuditFilter(T0 + timedelta(hours=1), T0 + timedelta(hours=2)), []),
    ],
)
def test_filters_by_time_who_and_action_prefix(state: State, flt: AuditFilter, expected: list[str]) -> None:
    seed(state)
    assert [e.action for e in state.list_audit(flt, None, 100).entries] == expected


def test_pages_follow_the_cursor_to_the_end_even_with_equal_times(state: State) -> None:
    seed(state)
    for target in ("a", "b", "c"):  # three entries at the same instant: the id breaks the tie
        state.add_audit(AuditEntry(T0 + timedelta(minutes=5), "ops", "people.update", target))
    seen: list[str] = []
    cursor: AuditCursor | None = None
    pages = 0
    while True:
        page = state.list_audit(EVERYTHING, cursor, 3)
        seen += [e.target for e in page.entries]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = AuditCursor.decode(page.next_cursor.encode())
    assert (pages, seen) == (3, ["c", "b", "a", "3", "p9", "grafana", "p1", "p1"])


def test_long_details_are_cut_and_bad_entries_refused() -> None:
    entry = AuditEntry(T0, "ops", "people.enrol", "x" * 1000, "INVALID_ARGUMENT", "y" * 2000)
    assert (len(entry.detail), len(entry.target), entry.detail.endswith("…")) == (MAX_DETAIL_CHARS, 256, True)
    with pytest.raises(InvalidArgumentError, match="audit who"):
        AuditEntry(T0, "", "people.enrol")
    with pytest.raises(InvalidArgumentError, match="must be after since"):
        AuditFilter(T0, T0)
    with pytest.raises(InvalidArgumentError, match="page_token is not one this server issued"):
        AuditCursor.decode("p1")
