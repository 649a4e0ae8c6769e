"""The State contract. Every test runs against each implementation: SQLite in a temporary folder, and
PostgreSQL in a fresh database of the session's throwaway cluster (tests.postgres)."""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import stat
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest

from facefleet.link.events import AGE_BANDS, GENDERS, AttributesResult, Event, ExpressionResult, FaceSnapshot
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, Person
from facefleet.link.models import ModelFile, ModelStatus
from facefleet.server.domain.audit import AuditEntry, AuditFilter
from facefleet.server.domain.models import PublishedModel, Target
from facefleet.server.domain.queries import AttributeCounts, EventCursor, EventFilter, to_us
from facefleet.server.domain.records import Crop, TokenRecord
from facefleet.server.domain.snapshots import SnapshotFilter
from facefleet.server.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, StateError
from facefleet.server.state.interface import State
from facefleet.server.state.postgres.connection import PgConnection
from facefleet.server.state.postgres.schema import (
    MIGRATIONS,
    PARTITIONED,
    detach_partition,
    expired_tables,
    month_bounds,
    partitions,
)
from facefleet.server.state.postgres.state import PostgresState
from facefleet.server.state.sql.events import COLUMN_COUNT, COLUMNS, _row, add_events
from facefleet.server.state.sql.meta import set_meta
from facefleet.server.state.sqlite.schema import MARKER
from facefleet.server.state.sqlite.state import SqliteState
from tests.postgres import PostgresCluster

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
BACKENDS = ("postgresql", "sqlite")


@pytest.fixture(params=BACKENDS)
def make_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., State]]:
    """Opens the state of one backend; every call opens the same database again."""
    made: list[State] = []
    url = ""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_cluster").create_database()

    def make(log_revisions: int = 1000) -> State:
        state: State
        if url:
            state = PostgresState(url, log_revisions=log_revisions, pool_size=4)
        else:
            state = SqliteState(tmp_path / "server.db", log_revisions=log_revisions)
        made.append(state)
        return state

    yield make
    for state in made:
        state.close()


@pytest.fixture
def state(make_state: Callable[..., State]) -> State:
    return make_state()


def emb(seed: int, model: str = "sface@2021dec", dim: int = 128) -> Embedding:
    return Embedding(
        model, np.random.default_rng(seed).normal(size=dim).astype(np.float32), 0.9, f"image:{seed}"
    )


def person(person_id: str, *seeds: int, **fields: object) -> Person:
    return Person(person_id, embeddings=tuple(emb(s) for s in seeds), **fields)  # type: ignore[arg-type]


def test_a_new_sqlite_database_and_its_wal_are_private_to_the_user(tmp_path: Path) -> None:
    path = tmp_path / "state" / "server.db"
    umask = os.umask(0o022)
    try:
        state = SqliteState(path)
        try:
            state.add_person(person("ada", 1), [], NOW)
            files = [path, *path.parent.glob("server.db-*")]
            modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in files}
        finally:
            state.close()
    finally:
        os.umask(umask)
    assert {"server.db", "server.db-wal", "server.db-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}


def test_a_new_database_starts_empty_at_revision_zero(state: State) -> None:
    assert state.head_revision() == 0
    assert len(state.gallery_id()) == 36
    snapshot = state.snapshot()
    assert (snapshot.snapshot, snapshot.to_revision, snapshot.upserts) == (True, 0, ())
    delta = state.changes_since(0)
    assert delta is not None
    assert (delta.upserts, delta.deletes) == ((), ())


def test_reopening_keeps_everything_and_migrations_are_idempotent(make_state: Callable[..., State]) -> None:
    first = make_state()
    first.add_person(person("alice", 1), [], NOW)
    gallery_id = first.gallery_id()
    first.close()
    again = make_state()
    assert (again.gallery_id(), again.head_revision()) == (gallery_id, 1)
    assert again.get_person("alice").embeddings[0].same_as(emb(1))


def test_each_change_is_one_revision_and_embeddings_round_trip(state: State) -> None:
    alice = person("alice", 1, 2, display_name="Alice", groups=("staff", "night"), metadata_json='{"b": 1}')
    stored = state.add_person(alice, [Crop("png", b"\x89PNG...", "image:0")], NOW)
    assert stored.revision == 1
    got = state.get_person("alice")
    assert got.same_as(replace(alice, revision=1))
    assert (got.created_at, got.updated_at) == (NOW, NOW)
    assert [c.data for c in state.crops("alice")] == [b"\x89PNG..."]
    updated = state.update_person("alice", NOW + timedelta(hours=1), display_name="Alice B")
    assert (updated.revision, updated.display_name, updated.groups) == (2, "Alice B", ("staff", "night"))
    assert updated.created_at == NOW
    assert state.delete_person("alice", NOW) == 3
    assert state.head_revision() == 3


def test_missing_and_duplicate_people_raise_domain_errors(state: State) -> None:
    state.add_person(person("alice", 1), [], NOW)
    with pytest.raises(AlreadyExistsError, match="alice is already enrolled"):
        state.add_person(person("alice", 2), [], NOW)
    for call in (
        lambda: state.get_person("bob"),
        lambda: state.delete_person("bob", NOW),
        lambda: state.update_person("bob", NOW, display_name="B"),
    ):
        with pytest.raises(NotFoundError, match="person bob is not enrolled"):
            call()
    assert state.head_revision() == 1


def test_replace_swaps_the_whole_face_and_append_adds(state: State) -> None:
    other = emb(9, model="arcface@1", dim=512)
    state.add_person(Person("alice", embeddings=(emb(1), other)), [Crop("png", b"a", "image:0")], NOW)
    state.replace_person(
        person("alice", 2, display_name="A"), [Crop("png", b"b", "image:0")], NOW, append=False
    )
    got = state.get_person("alice")
    assert got.display_name == "A"
    assert [e.model_id for e in got.embeddings] == ["sface@2021dec"]  # the old face's arcface one went too
    assert got.embeddings[0].same_as(emb(2))
    assert [c.data for c in state.crops("alice")] == [b"b"]
    state.replace_person(
        person("alice", 3, display_name="ignored"), [Crop("png", b"c", "image:0")], NOW, append=True
    )
    got = state.get_person("alice")
    assert (got.display_name, len(got.embeddings), got.revision) == ("A", 2, 3)
    assert [c.data for c in state.crops("alice")] == [b"b", b"c"]
    state.replace_person(person("bob", 4), [], NOW, append=False)  # replace creates a missing person
    assert state.get_person("bob").revision == 4
    state.replace_person(person("alice", 5), [], NOW, append=False)  # a new face without a crop
    assert state.crops("alice") == []  # the replaced face's crops go: no rollout re-embeds them


def test_append_beyond_the_embedding_limit_is_refused_and_rolled_back(state: State) -> None:
    state.add_person(person("alice", *range(200)), [], NOW)
    with pytest.raises(InvalidArgumentError, match="would have 400 embeddings"):
        state.replace_person(person("alice", *range(200, 400)), [], NOW, append=True)
    assert (len(state.get_person("alice").embeddings), state.head_revision()) == (200, 1)
    other = [emb(n, model="arcface@1", dim=512) for n in range(57)]  # a rollout's model, from many crops
    with pytest.raises(InvalidArgumentError, match="would have 257 embeddings"):
        state.replace_model_embeddings("alice", "arcface@1", other, NOW)
    assert (len(state.get_person("alice").embeddings), state.head_revision()) == (200, 1)
    assert state.snapshot().upserts[0].person_id == "alice"  # the gallery still loads


def test_changes_since_coalesces_upserts_and_deletes(state: State) -> None:
    state.add_person(person("alice", 1), [], NOW)  # 1
    state.add_person(person("bob", 2), [], NOW)  # 2
    state.add_person(person("carol", 3), [], NOW)  # 3
    state.update_person("alice", NOW, groups=("staff",))  # 4
    state.delete_person("bob", NOW)  # 5
    state.add_person(person("dave", 4), [], NOW)  # 6
    state.delete_person("dave", NOW)  # 7: created and deleted after R: a delete the agent can ignore
    delta = state.changes_since(2)
    assert delta is not None
    assert (delta.from_revision, delta.to_revision, delta.snapshot) == (2, 7, False)
    assert [p.person_id for p in delta.upserts] == ["alice", "carol"]
    assert delta.upserts[0].groups == ("staff",)
    assert delta.upserts[0].embeddings[0].same_as(emb(1))
    assert sorted(delta.deletes) == ["bob", "dave"]
    assert delta.gallery_id == state.gallery_id()
    head = state.changes_since(7)
    assert head is not None
    assert (head.upserts, head.deletes, head.to_revision) == ((), (), 7)


def test_the_log_is_compacted_and_old_revisions_need_a_snapshot(make_state: Callable[..., State]) -> None:
    state = make_state(log_revisions=3)
    for i in range(6):
        state.add_person(person(f"p{i}", i), [], NOW)
    state.delete_person("p0", NOW)  # 7
    assert state.changes_since(3) is None
    delta = state.changes_since(4)
    assert delta is not None
    assert [p.person_id for p in delta.upserts] == ["p4", "p5"]
    assert delta.deletes == ("p0",)
    snapshot = state.snapshot()
    assert (snapshot.snapshot, snapshot.to_revision) == (True, 7)
    assert [p.person_id for p in snapshot.upserts] == ["p1", "p2", "p3", "p4", "p5"]
    assert state.changes_since(8) is None  # a revision from the future


def test_people_list_pages_by_id_and_filters_by_group(state: State) -> None:
    for i in range(7):
        state.add_person(person(f"p{i}", i, groups=("even",) if i % 2 == 0 else ()), [], NOW)
    assert [p.person_id for p in state.list_people(limit=3)] == ["p0", "p1", "p2"]
    assert [p.person_id for p in state.list_people(after="p2", limit=3)] == ["p3", "p4", "p5"]
    assert [p.person_id for p in state.list_people(group="even")] == ["p0", "p2", "p4", "p6"]
    assert all(p.embeddings == () for p in state.list_people())
    assert state.list_people(group="nobody") == []


def test_people_are_searched_by_id_or_name_and_their_crops_counted(state: State) -> None:
    crop = Crop("png", b"a", "image:0")
    state.add_person(person("ada", 1, display_name="Ada Lovelace", groups=("staff",)), [crop, crop], NOW)
    state.add_person(person("grace", 2, display_name="Grace Hopper"), [crop], NOW)
    state.add_person(person("x_100", 3, display_name="100% sure"), [], NOW)
    state.add_person(person("x-1000", 4), [], NOW)
    assert [p.person_id for p in state.list_people(search="LOVE")] == ["ada"]
    assert [p.person_id for p in state.list_people(search="a")] == ["ada", "grace"]
    assert [p.person_id for p in state.list_people(search="a", group="staff")] == ["ada"]
    assert [p.person_id for p in state.list_people(search="a", after="ada")] == ["grace"]
    # LIKE's wildcards are searched for as themselves
    assert [p.person_id for p in state.list_people(search="x_")] == ["x_100"]
    assert [p.person_id for p in state.list_people(search="0%")] == ["x_100"]
    assert state.list_people(search="'; DROP TABLE people; --") == []
    assert [p.person_id for p in state.list_people(person_ids=["grace", "nobody", "ada"])] == ["ada", "grace"]
    assert [p.person_id for p in state.list_people(person_ids=["grace", "ada"], search="ada")] == ["ada"]
    assert state.crop_counts(["ada", "grace", "x_100", "nobody"]) == {
        "ada": 2,
        "grace": 1,
        "x_100": 0,
        "nobody": 0,
    }
    assert state.crop_counts([]) == {}


def test_agents_register_and_are_touched(state: State) -> None:
    registration = Registration("door-1", "0.1", "box", {"embedding": "sface@2021dec"}, ("cpu",), 3, "g")
    agent = state.register_agent(registration, NOW)
    assert (agent.registered_at, agent.last_seen, agent.gallery_revision) == (NOW, NOW, 3)
    state.touch_agent("door-1", NOW + timedelta(minutes=1), gallery_revision=5, health={"fps": 12.5})
    state.touch_agent("door-1", NOW, health=None)  # an older time never moves last_seen back
    again = state.register_agent(Registration("door-1", "0.2"), NOW + timedelta(minutes=2))
    assert again.registered_at == NOW
    assert (again.agent_version, again.health) == ("0.2", {"fps": 12.5})
    state.register_agent(Registration("door-0"), NOW)
    assert [a.device_id for a in state.list_agents()] == ["door-0", "door-1"]
    assert [a.device_id for a in state.list_agents(["door-1"])] == ["door-1"]
    assert state.get_agent("nobody") is None


def make_event(i: int, when: datetime, *, device: str = "door-1", **fields: object) -> Event:
    values: dict[str, object] = {"kind": "face", "decision": "unknown"}
    values.update(fields)
    return Event(str(uuid.UUID(int=i)), device, when, **values)  # type: ignore[arg-type]


def test_events_are_stored_once_whatever_the_repeats(state: State) -> None:
    events = [make_event(i, NOW + timedelta(seconds=i)) for i in range(1200)]
    assert state.add_events(events[:700]) == (700, 0)
    assert state.add_events(events) == (500, 700)
    assert state.add_events(events[:1] * 3) == (0, 3)
    assert state.add_events([]) == (0, 0)
    flt = EventFilter(NOW, NOW + timedelta(hours=1))
    assert sum(r.face_events for r in state.unknown_rates(flt)) == 1200
    page = state.list_events(flt, None, 1000)
    assert len({e.event_id for e in page.events}) == 1000
    assert state.add_events([make_event(5000, NOW, device="door-2")]) == (1, 0)
    asked = [events[0].event_id, str(uuid.UUID(int=5000)), str(uuid.UUID(int=9999)), events[1199].event_id]
    assert state.event_devices(asked) == {
        events[0].event_id: "door-1",
        str(uuid.UUID(int=5000)): "door-2",
        events[1199].event_id: "door-1",
    }


def test_event_paging_is_stable_when_times_tie(state: State) -> None:
    events = [make_event(i, NOW) for i in range(25)]
    state.add_events(events)
    flt, cursor, seen = EventFilter(NOW, NOW + timedelta(seconds=1)), None, []
    while True:
        page = state.list_events(flt, cursor, 10)
        seen.extend(e.event_id for e in page.events)
        if page.next_cursor is None:
            break
        cursor = EventCursor.decode(page.next_cursor.encode())
    assert seen == sorted((e.event_id for e in events), reverse=True)


def test_page_tokens_are_bound_to_their_filter_sealed_and_taken_by_every_replica(
    make_state: Callable[..., State],
) -> None:
    """A page token is sealed with a key kept in the state: another replica on the same database (or the
    server after a restart) continues the listing, while the token used with another filter (other cameras,
    another audit action prefix) or altered is refused, naming page_token and the fix. A moved time range
    (a window relative to now) is the same listing."""
    state, replica = make_state(), make_state()
    state.add_events(
        [make_event(i, NOW + timedelta(seconds=i), camera="cam-a" if i % 2 else "cam-b") for i in range(6)]
    )
    for action in ("people.enrol", "people.delete", "tokens.create"):
        state.add_audit(AuditEntry(NOW, "ops", action, "x"))
    cam_a = EventFilter(NOW, NOW + timedelta(hours=1), cameras=("cam-a",))
    first = state.list_events(cam_a, None, 1)
    assert first.next_cursor is not None
    cursor = EventCursor.decode(first.next_cursor.encode())
    moved = EventFilter(NOW - timedelta(minutes=1), NOW + timedelta(hours=2), cameras=("cam-a",))
    assert [e.camera for e in replica.list_events(moved, cursor, 10).events] == ["cam-a", "cam-a"]
    people = AuditFilter(NOW, NOW + timedelta(hours=1), action="people")
    audit = state.list_audit(people, None, 1).next_cursor
    assert audit is not None
    assert [e.action for e in replica.list_audit(people, audit, 10).entries] == ["people.enrol"]
    altered = replace(cursor, time_us=cursor.time_us - 2_000_000)
    refusals = [
        lambda: replica.list_events(replace(cam_a, cameras=("cam-b",)), cursor, 10),
        lambda: state.list_events(replace(cam_a, cameras=()), cursor, 10),
        lambda: state.list_events(cam_a, altered, 10),
        lambda: state.list_events(cam_a, EventCursor(cursor.time_us, cursor.event_id), 10),
        lambda: replica.list_audit(replace(people, action="tokens"), audit, 10),
        lambda: state.list_audit(replace(people, who="ops"), audit, 10),
    ]
    for refused in refusals:
        with pytest.raises(InvalidArgumentError, match="start again without page_token"):
            refused()


def test_camera_and_door_filters_list_exactly_their_events(state: State) -> None:
    events = random_events(1500, seed=7, span_s=6 * 3600)
    state.add_events(events)
    start, end = NOW + timedelta(minutes=30), NOW + timedelta(hours=5)
    for flt, wanted in (
        (EventFilter(start, end, cameras=("north",)), lambda e: e.camera == "north"),
        (EventFilter(start, end, doors=("side",)), lambda e: e.door == "side"),
        (EventFilter(start, end, cameras=("south", "north")), lambda e: e.camera in ("south", "north")),
        (
            EventFilter(start, end, cameras=("south",), doors=("main", "side"), kinds=("access",)),
            lambda e: e.camera == "south" and e.door in ("main", "side"),
        ),
        (EventFilter(start, end, cameras=("nowhere",)), lambda e: False),
        (EventFilter(start, end, doors=("north",)), lambda e: False),  # a camera's name is not a door's
    ):
        listed, cursor = [], None
        while True:
            page = state.list_events(flt, cursor, 100)
            listed.extend(page.events)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        expected = sorted(
            (e for e in events if start <= e.time < end and wanted(e)),
            key=lambda e: (e.time, e.event_id),
            reverse=True,
        )
        assert [e.event_id for e in listed] == [e.event_id for e in expected]
        assert listed == expected  # every field as reported


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cameras": ("",)}, "filter cameras: '' is not a camera name: use 1–128 characters"),
        ({"doors": ("front\n",)}, "filter doors: 'front\\n' is not a door name"),
        ({"doors": ("d" * 129,)}, f"filter doors: '{'d' * 80}' is not a door name"),
        ({"cameras": tuple(f"cam-{i}" for i in range(101))}, "filter cameras: at most 100 values"),
        ({"doors": tuple(f"door-{i}" for i in range(101))}, "filter doors: at most 100 values"),
    ],
)
def test_bad_camera_and_door_filters_are_refused_naming_the_field(
    fields: dict[str, tuple[str, ...]], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        EventFilter(NOW, NOW + timedelta(hours=1), **fields)  # type: ignore[arg-type]
    assert EventFilter(NOW, NOW + timedelta(hours=1), cameras=("Porch cam 2",), doors=("front",)).cameras == (
        "Porch cam 2",
    )


EDGE_ATTRIBUTES = (
    AttributesResult("female", 0.5, 12.5, "0-12"),  # an agent says female at 0.5; 12.46 years is band 0-12
    AttributesResult("male", 0.5, 12.5, "13-19"),  # 0.50004 (male), rounded on the wire; 12.54 years
    AttributesResult("female", 0.0, 0.0, "0-12"),
    AttributesResult("male", 1.0, 150.0, "60+"),
    AttributesResult("male", 0.5001, 19.5, "20-29"),
    AttributesResult("female", 0.4999, 59.4, "50-59"),
)
"""Attributes at the edges of their ranges, gender and band as an agent reports them."""


def random_attributes(rng: random.Random) -> AttributesResult | None:
    """None for a third (an agent without [attributes]), an edge case for some, else random estimates."""
    draw = rng.random()
    if draw < 0.35:
        return None
    if draw < 0.45:
        return rng.choice(EDGE_ATTRIBUTES)
    male = round(rng.random(), 4)
    return AttributesResult(
        "male" if male > 0.5 else "female", male, round(rng.uniform(0, 95), 1), rng.choice(AGE_BANDS)
    )


def random_events(count: int, seed: int, span_s: int) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        when = NOW + timedelta(seconds=rng.randrange(0, span_s), microseconds=rng.randrange(10**6))
        device = rng.choice(["door-1", "door-2", "lobby"])
        camera = rng.choice(["north", "south", ""])
        if rng.random() < 0.3:
            events.append(
                make_event(i, when, device=device, kind="access", decision=rng.choice(["granted", "denied"]),
                           person_id="alice", door=rng.choice(["main", "side"]), camera=camera,
                           attributes=random_attributes(rng) if rng.random() < 0.1 else None)
            )  # fmt: skip
        else:
            decision = rng.choice(["match", "unknown", "ambiguous"])
            label = rng.choice(["happy", "sad", "neutral", ""])
            expression = ExpressionResult(label, {label: 1.0}) if label else None
            person_id = "bob" if decision == "match" else ""
            events.append(
                make_event(
                    i,
                    when,
                    device=device,
                    decision=decision,
                    person_id=person_id,
                    expression=expression,
                    camera=camera,
                    attributes=random_attributes(rng),
                )
            )
    return events


def attribute_tally(events: list[Event]) -> dict[str, tuple[int, dict[tuple[str, str], int]]]:
    """Brute force: per device with face events, (face events, {(gender, age band): estimated ones})."""
    tally: dict[str, tuple[int, dict[tuple[str, str], int]]] = {}
    for e in events:
        if e.kind != "face":
            continue
        faces, cells = tally.get(e.device_id, (0, {}))
        if e.attributes is not None:
            key = (e.attributes.gender, e.attributes.age_band)
            cells[key] = cells.get(key, 0) + 1
        tally[e.device_id] = (faces + 1, cells)
    return tally


def as_tally(rows: list[AttributeCounts]) -> dict[str, tuple[int, dict[tuple[str, str], int]]]:
    """What the state answered, as attribute_tally gives it, after checking each row's order and sums."""
    assert [r.device_id for r in rows] == sorted(r.device_id for r in rows)
    order = [(g, b) for g in GENDERS for b in AGE_BANDS]
    for row in rows:
        cells = [(c.gender, c.age_band) for c in row.counts]
        assert cells == sorted(cells, key=order.index) and all(c.count > 0 for c in row.counts)
        assert row.estimated == sum(c.count for c in row.counts) <= row.face_events
        assert list(row.genders) == list(GENDERS) and list(row.age_bands) == list(AGE_BANDS)
        assert sum(row.genders.values()) == sum(row.age_bands.values()) == row.estimated
        for gender in GENDERS:
            assert row.genders[gender] == sum(c.count for c in row.counts if c.gender == gender)
        for band in AGE_BANDS:
            assert row.age_bands[band] == sum(c.count for c in row.counts if c.age_band == band)
    return {r.device_id: (r.face_events, {(c.gender, c.age_band): c.count for c in r.counts}) for r in rows}


DAY_S = 86400


@pytest.mark.parametrize(
    ("start_s", "end_s"),
    [
        (0, 6 * 3600),
        (1234, 5 * 3600 + 77),
        (3600, 7200),
        (100, 200),
        (5000, 5001),
        (-3600, 12 * 3600),
        (-DAY_S, 4 * DAY_S),
        (777, 2 * DAY_S + 3 * 3600 + 5),
        (12 * 3600 - 1, 36 * 3600 + 1),
    ],
)
def test_aggregates_match_a_brute_force_count_at_any_boundaries(
    state: State, start_s: int, end_s: int
) -> None:
    events = random_events(3000, seed=start_s, span_s=3 * DAY_S if end_s > DAY_S else 6 * 3600)
    for offset in range(0, len(events), 1000):
        state.add_events(events[offset : offset + 1000])
    start, end = NOW + timedelta(seconds=start_s), NOW + timedelta(seconds=end_s)
    inside = [e for e in events if start <= e.time < end]
    flt = EventFilter(start, end)

    counts = Counter()
    for e in inside:
        bucket = int(e.time.timestamp()) // 1800 * 1800
        counts[(bucket, e.device_id)] += 1
    got = {(int(c.start.timestamp()), c.device_id): c.count for c in state.count_events(flt, 1800)}
    assert got == dict(counts)
    hourly = {(int(c.start.timestamp()), c.device_id): c.count for c in state.count_events(flt, 7200)}
    expected_hourly = Counter((int(e.time.timestamp()) // 7200 * 7200, e.device_id) for e in inside)
    assert hourly == dict(expected_hourly)
    fleet_wide = {
        (int(c.start.timestamp()), c.device_id): c.count
        for c in state.count_events(flt, 86400, per_device=False)
    }
    assert fleet_wide == dict(Counter((int(e.time.timestamp()) // 86400 * 86400, "") for e in inside))

    faces = [e for e in inside if e.kind == "face"]
    expressions = {c.label: c.count for c in state.expression_counts(flt, per_device=False)}
    assert expressions == dict(Counter(e.expression.label for e in faces if e.expression))
    rates = {r.device_id: (r.face_events, r.unknown_events) for r in state.unknown_rates(flt)}
    expected_rates: dict[str, tuple[int, int]] = {}
    for e in faces:
        total, unknown = expected_rates.get(e.device_id, (0, 0))
        expected_rates[e.device_id] = (total + 1, unknown + (e.decision == "unknown"))
    assert rates == expected_rates
    doors = {(d.device_id, d.door): (d.granted, d.denied) for d in state.access_summary(flt)}
    expected_doors: dict[tuple[str, str], tuple[int, int]] = {}
    for e in inside:
        if e.kind == "access":
            granted, denied = expected_doors.get((e.device_id, e.door), (0, 0))
            expected_doors[(e.device_id, e.door)] = (
                granted + (e.decision == "granted"),
                denied + (e.decision == "denied"),
            )
    assert doors == expected_doors
    device_only = EventFilter(start, end, device_ids=("lobby",), decisions=("unknown",))
    assert sum(c.count for c in state.count_events(device_only, 3600)) == sum(
        1 for e in inside if e.device_id == "lobby" and e.decision == "unknown"
    )
    assert as_tally(state.attribute_counts(flt)) == attribute_tally(inside)
    assert as_tally(state.attribute_counts(device_only)) == attribute_tally(
        [e for e in inside if e.device_id == "lobby" and e.decision == "unknown"]
    )
    total = AttributeCounts.total(state.attribute_counts(flt))
    assert (total.device_id, total.face_events) == ("", len(faces))
    assert {(c.gender, c.age_band): c.count for c in total.counts} == dict(
        Counter((e.attributes.gender, e.attributes.age_band) for e in faces if e.attributes)
    )

    # a door filter is served by the rollups, a camera filter by the raw events: both count exactly
    for narrow, wanted in (
        (EventFilter(start, end, doors=("main",)), lambda e: e.door == "main"),
        (EventFilter(start, end, cameras=("north",)), lambda e: e.camera == "north"),
        (
            EventFilter(
                start, end, cameras=("south", "north"), doors=("side",), device_ids=("lobby", "door-1")
            ),
            lambda e: e.camera in ("south", "north") and e.door == "side" and e.device_id != "door-2",
        ),
    ):
        chosen = [e for e in inside if wanted(e)]
        got = {(int(c.start.timestamp()), c.device_id): c.count for c in state.count_events(narrow, 3600)}
        assert got == dict(Counter((int(e.time.timestamp()) // 3600 * 3600, e.device_id) for e in chosen))
        doors = {(d.device_id, d.door): (d.granted, d.denied) for d in state.access_summary(narrow)}
        assert doors == {
            key: (sum(e.decision == "granted" for e in group), sum(e.decision == "denied" for e in group))
            for key in {(e.device_id, e.door) for e in chosen if e.kind == "access"}
            for group in [[e for e in chosen if (e.device_id, e.door) == key]]
        }
        rates = {r.device_id: (r.face_events, r.unknown_events) for r in state.unknown_rates(narrow)}
        faces = [e for e in chosen if e.kind == "face"]
        assert rates == {
            device: (sum(e.device_id == device for e in faces),
                     sum(e.device_id == device and e.decision == "unknown" for e in faces))
            for device in {e.device_id for e in faces}
        }  # fmt: skip
        expressions = {c.label: c.count for c in state.expression_counts(narrow, per_device=False)}
        assert expressions == dict(Counter(e.expression.label for e in faces if e.expression))
        assert as_tally(state.attribute_counts(narrow)) == attribute_tally(chosen)
    # the attribute distribution under each other filter, alone and together (person filters are the
    # handler's to refuse; the state counts face events whatever kinds the filter names)
    for narrow, wanted in (
        (EventFilter(start, end, decisions=("match", "ambiguous")), lambda e: e.decision != "unknown"),
        (
            EventFilter(start, end, device_ids=("door-2",), kinds=("access",)),
            lambda e: e.device_id == "door-2",
        ),
        (EventFilter(start, end, decisions=("granted",)), lambda e: False),
        (
            EventFilter(
                start, end, device_ids=("door-1", "lobby"), cameras=("south",), decisions=("unknown",)
            ),
            lambda e: e.device_id != "door-2" and e.camera == "south" and e.decision == "unknown",
        ),
    ):
        assert as_tally(state.attribute_counts(narrow)) == attribute_tally([e for e in inside if wanted(e)])


def test_events_keep_their_attributes_or_their_absence(state: State) -> None:
    events = [
        make_event(1, NOW, attributes=AttributesResult("male", 0.8934, 31.4, "30-39")),
        make_event(2, NOW + timedelta(seconds=1), attributes=EDGE_ATTRIBUTES[1]),
        make_event(3, NOW + timedelta(seconds=2)),
        make_event(4, NOW + timedelta(seconds=3), kind="access", decision="granted", door="main",
                   attributes=AttributesResult("female", 0.0001, 150.0, "60+")),
    ]  # fmt: skip
    state.add_events(events)
    page = state.list_events(EventFilter(NOW, NOW + timedelta(minutes=1)), None, 10)
    assert page.events == tuple(reversed(events))
    assert [e.attributes for e in page.events][2:] == [EDGE_ATTRIBUTES[1], events[0].attributes]
    assert page.events[1].attributes is None


def test_the_attribute_distribution_counts_exactly_the_events_of_the_range(state: State) -> None:
    """Events on every edge an aggregate splits at: the range's own (start counts, end does not), whole
    hours and whole days (the rollups) and the partial hours between them (the raw events)."""
    day = NOW.replace(hour=0)
    moments = [
        day - timedelta(microseconds=1),
        day,
        day + timedelta(microseconds=1),
        day + timedelta(hours=1) - timedelta(microseconds=1),
        day + timedelta(hours=1),
        NOW - timedelta(microseconds=1),
        NOW,
        NOW + timedelta(minutes=30),
        day + timedelta(days=1) - timedelta(microseconds=1),
        day + timedelta(days=1),
        day + timedelta(days=2, hours=5, microseconds=1),
        day + timedelta(days=3),
    ]
    events = [
        make_event(i * 10 + j, moment, device=("door-1", "lobby")[j % 2], attributes=attributes)
        for i, moment in enumerate(moments)
        for j, attributes in enumerate((*EDGE_ATTRIBUTES, None))
    ]
    state.add_events(events[::2])
    state.add_events(events)  # the repeats are stored once and counted once
    for start, end in (
        (day, day + timedelta(days=3)),
        (day + timedelta(microseconds=1), day + timedelta(days=1)),
        (day - timedelta(microseconds=1), day + timedelta(hours=1)),
        (NOW, NOW + timedelta(microseconds=1)),
        (NOW - timedelta(hours=13), NOW + timedelta(days=2, hours=6)),
        (day + timedelta(days=1), day + timedelta(days=1, microseconds=1)),
    ):
        rows = state.attribute_counts(EventFilter(start, end))
        assert as_tally(rows) == attribute_tally([e for e in events if start <= e.time < end]), (start, end)
    whole = AttributeCounts.total(state.attribute_counts(EventFilter(day, day + timedelta(days=3))))
    assert whole.genders == {"female": 30, "male": 30}
    assert whole.age_bands == {"0-12": 20, "13-19": 10, "20-29": 10, "30-39": 0, "40-49": 0, "50-59": 10,
                               "60+": 10}  # fmt: skip
    assert (whole.face_events, whole.estimated) == (70, 60)
    assert state.attribute_counts(EventFilter(day - timedelta(days=1), day - timedelta(hours=1))) == []


def test_rollout_state_counts_match_each_rollouts_devices(state: State) -> None:
    model_id = "mini-xception@v2"
    files = (ModelFile("model.xml", 1, "c" * 64),)
    state.models.add_model(PublishedModel(model_id, "expression", "FP32", "MIT", files, "{}", NOW))
    first = state.models.add_rollout(model_id, Target("all"), "active", NOW).rollout_id
    state.models.change_rollout(first, lambda r: replace(r, state="rolled_back"))
    second = state.models.add_rollout(model_id, Target("all"), "active", NOW).rollout_id
    unannounced = state.models.add_rollout(model_id, Target("all"), "active", NOW).rollout_id
    for n in range(7):
        device = f"door-{n}"
        state.register_agent(Registration(device), NOW)
        state.models.announce(
            device, [(first, "mini-xception@fer2013"), (second, "mini-xception@fer2013")], NOW
        )
        outcome = ("failed", "model.bin: sha256 differs") if n % 3 == 0 else ("active", "")
        status = ModelStatus("expression", model_id, second, outcome[0], outcome[1], NOW)
        state.models.set_agent_models(device, NOW, statuses=[status])
    counts = state.models.rollout_state_counts([first, second, unannounced, 999])
    for rollout_id in (first, second):
        assert counts[rollout_id] == dict(Counter(d.state for d in state.models.rollout_devices(rollout_id)))
    assert counts[second] == {"failed": 3, "active": 4} and counts[first] == {"assigned": 7}
    assert counts[unannounced] == counts[999] == {}
    assert state.models.rollout_state_counts([]) == {}


def test_tokens_are_stored_looked_up_and_revoked(state: State) -> None:
    record = TokenRecord("00ff", "grafana", "query", b"salt", b"digest", NOW)
    state.add_token(record)
    with pytest.raises(AlreadyExistsError, match="a token named 'grafana' exists"):
        state.add_token(TokenRecord("11ff", "grafana", "admin", b"s", b"d", NOW))
    assert state.find_token("00ff") == record
    assert [t.name for t in state.list_tokens()] == ["grafana"]
    state.revoke_token("grafana")
    assert state.find_token("00ff") is None
    with pytest.raises(NotFoundError, match="no token named 'grafana'"):
        state.revoke_token("grafana")


def test_concurrent_writers_get_distinct_revisions(state: State) -> None:
    def enrol(worker: int) -> None:
        for i in range(10):
            state.add_person(person(f"w{worker}-{i}", i), [], NOW)

    threads = [threading.Thread(target=enrol, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.head_revision() == 40
    assert sorted(p.revision for p in state.snapshot().upserts) == list(range(1, 41))


def test_a_database_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    import sqlite3

    SqliteState(tmp_path / "server.db").close()
    with sqlite3.connect(tmp_path / "server.db") as conn:
        conn.execute("INSERT INTO facefleet_migrations VALUES (99, 'from_the_future', 0)")
    with pytest.raises(StateError, match="schema version 99, newer than this server"):
        SqliteState(tmp_path / "server.db")


def as_recorded_before_the_runner(path: Path, version: str) -> None:
    """Record the schema version as servers did before facefleet.core.migrations: in the meta table."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE facefleet_migrations")
        conn.execute("PRAGMA user_version = 0")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (version,))
    conn.close()


def test_a_database_recorded_in_meta_at_the_current_version_is_adopted_keeping_everything(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "server.db"
    state = SqliteState(path)
    state.add_person(person("alice", 1), [], NOW)
    gallery_id = state.gallery_id()
    state.close()
    as_recorded_before_the_runner(path, "3")
    with sqlite3.connect(path) as conn:  # the schema servers had then: without migration 4's columns
        for column in ("max_failures_count", "max_failures_percent", "on_failures"):
            conn.execute(f"ALTER TABLE rollouts DROP COLUMN {column}")
        conn.execute("ALTER TABLE agents DROP COLUMN model_precisions_json")  # and without migration 11's
    conn.close()
    for _ in range(2):  # migrations 3 and 4 (ALTER TABLE … ADD COLUMN) would fail if they ran again
        state = SqliteState(path)
        assert (state.gallery_id(), state.head_revision()) == (gallery_id, 1)
        assert [p.person_id for p in state.list_people()] == ["alice"]
        state.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version, name FROM facefleet_migrations").fetchall() == [
            (1, "initial"),
            (2, "models"),
            (3, "rollout_reason"),
            (4, "rollout_failure_budget"),
            (5, "admin_audit"),
            (6, "devices"),
            (7, "snapshots"),
            (8, "event_camera_door_indexes"),
            (9, "event_attributes"),
            (10, "attribute_cells"),
            (11, "agent_precisions"),
        ]
        # what servers of those days read as a newer server's database
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (MARKER,)
        assert conn.execute("PRAGMA user_version").fetchone() == (11,)
    conn.close()


def store_as_version_8(path: Path, events: list[Event]) -> None:
    """A state database at schema version 8 holding `events` as a server of that version stored them: no
    attribute columns, both rollups by device, kind, decision, expression and door."""
    import sqlite3

    from facefleet.core.migrations import Migrations
    from facefleet.server.state.sqlite.state import MIGRATIONS

    version_8 = Migrations(MIGRATIONS.steps[:8], "state database", "server", "upgrade", MIGRATIONS.legacy)
    conn = sqlite3.connect(path, isolation_level=None)
    version_8.apply(conn, path)
    columns = (
        "event_id, device_id, time_us, kind, decision, camera, person_id, score, margin, expression, "
        "expression_json, quality, model_versions_json, gallery_revision, door, reason"
    )
    to_us = {e.event_id: int(e.time.timestamp()) * 1_000_000 + e.time.microsecond for e in events}
    with conn:
        conn.executemany(
            f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * 16)})",
            [
                (e.event_id, e.device_id, to_us[e.event_id], e.kind, e.decision, e.camera, e.person_id,
                 e.score, e.margin, e.expression.label if e.expression else "",
                 '{"' + e.expression.label + '": 1.0}' if e.expression else "{}", e.quality, "{}",
                 e.gallery_revision, e.door, e.reason)
                for e in events
            ],
        )  # fmt: skip
        for size, table in ((86_400_000_000, "event_rollup_day"), (3_600_000_000, "event_rollup_hour")):
            tally = Counter(
                (to_us[e.event_id] // size * size, e.device_id, e.kind, e.decision,
                 e.expression.label if e.expression else "", e.door)
                for e in events
            )  # fmt: skip
            conn.executemany(
                f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*key, n) for key, n in tally.items()],
            )
    conn.close()


def test_an_agent_registered_before_precisions_were_recorded_keeps_its_row(tmp_path: Path) -> None:
    """Migration 11 adds what each agent's models run at: a row from before reads as unknown ({}), and the
    agent's next registration fills it in."""
    import sqlite3

    from facefleet.core.migrations import Migrations
    from facefleet.server.state.sqlite.state import MIGRATIONS

    path = tmp_path / "server.db"
    version_10 = Migrations(MIGRATIONS.steps[:10], "state database", "server", "upgrade", MIGRATIONS.legacy)
    conn = sqlite3.connect(path, isolation_level=None)
    version_10.apply(conn, path)
    with conn:
        conn.execute(
            "INSERT INTO agents (device_id, agent_version, hostname, model_versions_json, capabilities_json, "
            "gallery_revision, registered_us, last_seen_us, health_json) "
            """VALUES ('door-1', '0.1.0', 'box', '{"embedding": "sface@2021dec"}', '[]', 3, 1, 2, '{}')"""
        )
    conn.close()
    state = SqliteState(path)
    try:
        agent = state.get_agent("door-1")
        assert agent is not None
        assert (dict(agent.model_versions), agent.gallery_revision, dict(agent.model_precisions)) == (
            {"embedding": "sface@2021dec"},
            3,
            {},
        )
        precisions = {"embedding": "int8 (sface@2021dec-int8-local)"}
        state.register_agent(Registration("door-1", model_precisions=precisions), NOW)
        again = state.get_agent("door-1")
        assert again is not None and dict(again.model_precisions) == precisions
    finally:
        state.close()


def test_a_version_8_database_gains_attributes_keeping_its_events_and_rollups(tmp_path: Path) -> None:
    import sqlite3

    from facefleet.server.state.sqlite.state import MIGRATIONS as SQLITE_MIGRATIONS

    path = tmp_path / "server.db"
    old = [
        replace(e, attributes=None, model_versions={}) for e in random_events(2000, seed=8, span_s=3 * DAY_S)
    ]
    for i, e in enumerate(old):  # probabilities as the version 8 servers stored them, one per label
        if e.expression is not None:
            old[i] = replace(e, expression=ExpressionResult(e.expression.label, {e.expression.label: 1.0}))
    store_as_version_8(path, old)

    def rollups() -> list[list[tuple[object, ...]]]:
        with sqlite3.connect(path) as conn:
            tables = [
                conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
                for table in ("event_rollup_day", "event_rollup_hour")
            ]
        conn.close()
        return tables

    before = rollups()
    state = SqliteState(path)
    try:
        assert rollups() == before
        with state.read() as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (len(SQLITE_MIGRATIONS.steps),)
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        start, end = NOW - timedelta(hours=1), NOW + timedelta(days=3)
        flt = EventFilter(start, end)
        listed, cursor = [], None
        while True:
            page = state.list_events(flt, cursor, 1000)
            listed.extend(page.events)
            if (cursor := page.next_cursor) is None:
                break
        assert listed == sorted(old, key=lambda e: (e.time, e.event_id), reverse=True)
        daily = {(int(c.start.timestamp()), c.device_id): c.count for c in state.count_events(flt, 86400)}
        assert daily == dict(Counter((int(e.time.timestamp()) // 86400 * 86400, e.device_id) for e in old))
        faces = [e for e in old if e.kind == "face"]
        expressions = {c.label: c.count for c in state.expression_counts(flt, per_device=False)}
        assert expressions == dict(Counter(e.expression.label for e in faces if e.expression))
        assert sum(d.granted + d.denied for d in state.access_summary(flt)) == len(old) - len(faces)
        assert as_tally(state.attribute_counts(flt)) == attribute_tally(old)
        assert AttributeCounts.total(state.attribute_counts(flt)).estimated == 0

        new = random_events(3000, seed=9, span_s=3 * DAY_S)[2000:]  # ids after the old ones
        assert state.add_events([*old[:100], *new]) == (1000, 100)
        both = old + new
        assert as_tally(state.attribute_counts(flt)) == attribute_tally(both)
        daily = {(int(c.start.timestamp()), c.device_id): c.count for c in state.count_events(flt, 86400)}
        assert daily == dict(Counter((int(e.time.timestamp()) // 86400 * 86400, e.device_id) for e in both))
        page = state.list_events(EventFilter(start, end, device_ids=("lobby",)), None, 1000)
        assert {e.event_id: e for e in page.events} == {e.event_id: e for e in both if e.device_id == "lobby"}
    finally:
        state.close()


def long_rollups(events: list[Event]) -> dict[str, list[tuple[object, ...]]]:
    """The rows of every rollup as servers before the wide attribute rollups stored them: the main ones, and
    a row per gender and age band in event_attributes_day/hour; table → rows."""
    rows = {}
    for size, suffix in ((DAY_S * 1_000_000, "day"), (3600 * 1_000_000, "hour")):
        main = Counter(
            (to_us(e.time) // size * size, e.device_id, e.kind, e.decision,
             e.expression.label if e.expression else "", e.door)
            for e in events
        )  # fmt: skip
        cells = Counter(
            (to_us(e.time) // size * size, e.device_id, e.kind, e.decision, e.door, a.gender, a.age_band)
            for e in events
            if (a := e.attributes) is not None
        )
        rows[f"event_rollup_{suffix}"] = [(*key, n) for key, n in main.items()]
        rows[f"event_attributes_{suffix}"] = [(*key, n) for key, n in cells.items()]
    return rows


def store_long(execute: Callable[[str, list[object]], object], events: list[Event], marker: str) -> None:
    """Store events and long_rollups(events) with `execute(sql, params)` (`marker`: the placeholder)."""
    for event in events:
        execute(
            f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join([marker] * COLUMN_COUNT)})", list(_row(event))
        )
    for table, rows in long_rollups(events).items():
        for row in rows:
            execute(f"INSERT INTO {table} VALUES ({', '.join([marker] * len(row))})", list(row))


def assert_same_aggregates(state: State, events: list[Event]) -> None:
    """Attribute, expression and count aggregates over whole and partial days equal brute-force counts."""
    for start, end in ((NOW, NOW + timedelta(days=4)), (NOW + timedelta(hours=5), NOW + timedelta(hours=67))):
        inside = [e for e in events if start <= e.time < end]
        flt = EventFilter(start, end)
        assert as_tally(state.attribute_counts(flt)) == attribute_tally(inside)
        daily = {(int(c.start.timestamp()), c.device_id): c.count for c in state.count_events(flt, 86400)}
        assert daily == dict(Counter((int(e.time.timestamp()) // 86400 * 86400, e.device_id) for e in inside))


def test_a_version_9_database_keeps_its_attribute_counts_in_wide_rows(tmp_path: Path) -> None:
    import sqlite3

    from facefleet.core.migrations import Migrations
    from facefleet.server.state.sqlite.state import MIGRATIONS as SQLITE_MIGRATIONS

    path = tmp_path / "server.db"
    events = random_events(3000, seed=10, span_s=3 * DAY_S)
    version_9 = Migrations(SQLITE_MIGRATIONS.steps[:9], "state database", "server", "upgrade")
    conn = sqlite3.connect(path, isolation_level=None)
    version_9.apply(conn, path)
    with conn:
        store_long(conn.execute, events, "?")
    conn.close()
    state = SqliteState(path)
    try:
        assert_same_aggregates(state, events)
        with state.read() as read:
            tables = {row[0] for row in read.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "event_attribute_cells_day" in tables and "event_attributes_day" not in tables
    finally:
        state.close()


def test_postgresql_migration_3_keeps_the_attribute_counts_in_wide_monthly_partitions(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_cluster.create_database()
    events = random_events(3000, seed=11, span_s=3 * DAY_S)
    with psycopg.connect(url, autocommit=True) as raw, raw.transaction():  # as servers of migration 2 left it
        raw.execute(
            "CREATE TABLE facefleet_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        for step in MIGRATIONS[:2]:
            for statement in step.statements:
                raw.execute(statement)
            raw.execute("INSERT INTO facefleet_migrations VALUES (%s, %s, 0)", (step.version, step.name))
        start, end = month_bounds(2026, 5)
        for table in ("events", *long_rollups([])):
            raw.execute(
                f"CREATE TABLE {table}_2026_05 PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})"
            )
        store_long(lambda sql, params: raw.execute(sql, params), events, "%s")
        april = month_bounds(2026, 4)  # a month of the long rollup without a partition of events
        raw.execute(
            f"CREATE TABLE event_attributes_day_2026_04 PARTITION OF event_attributes_day "
            f"FOR VALUES FROM ({april[0]}) TO ({april[1]})"
        )
        raw.execute(
            "INSERT INTO event_attributes_day VALUES (%s, 'lobby', 'face', 'match', '', 'male', '30-39', 7)",
            (april[0],),
        )
    state = PostgresState(url, pool_size=2)
    try:
        assert_same_aggregates(state, events)
        with state.connection() as conn:
            for table in PARTITIONED:
                months = ["2026_04", "2026_05"] if table == "event_attribute_cells_day" else ["2026_05"]
                found = [name for name, *_ in partitions(conn.raw, table)]  # type: ignore[attr-defined]
                assert found == [f"{table}_{month}" for month in months]
            kept = conn.execute(
                "SELECT device_id, n_male_30_39 FROM event_attribute_cells_day WHERE bucket_us < ?",
                (month_bounds(2026, 5)[0],),
            ).fetchall()
            assert [tuple(row) for row in kept] == [("lobby", 7)]
    finally:
        state.close()


def test_a_database_recorded_in_meta_at_a_newer_version_is_refused(tmp_path: Path) -> None:
    SqliteState(tmp_path / "server.db").close()
    as_recorded_before_the_runner(tmp_path / "server.db", "99")
    with pytest.raises(StateError, match="schema version 99, newer than this server"):
        SqliteState(tmp_path / "server.db")


def test_closing_waits_for_a_statement_in_flight_and_refuses_later_calls(tmp_path: Path) -> None:
    """At shutdown a worker thread may still be writing for a call the server already cancelled: closing
    its connection under it used to crash the process."""
    state = SqliteState(tmp_path / "server.db")
    inside, order = threading.Event(), []

    def write() -> None:
        with state.write() as conn:
            inside.set()
            time.sleep(0.3)
            conn.execute("SELECT 1")
        order.append("written")

    worker = threading.Thread(target=write)
    worker.start()
    assert inside.wait(5)
    state.close()
    order.append("closed")
    worker.join(5)
    assert order == ["written", "closed"]
    with pytest.raises(StateError, match="closed"):
        state.head_revision()


def test_replacing_one_models_embeddings_keeps_crops_and_other_models(state: State) -> None:
    crop = Crop("png", b"\x89PNG fake", "image:1")
    state.add_person(Person("alice", embeddings=(emb(1), emb(2, "other@v1"))), [crop], NOW)
    revision = state.replace_model_embeddings("alice", "other@v1", [emb(3, "other@v1"), emb(4)], NOW)
    assert revision == state.head_revision() == 2
    person = state.get_person("alice")
    assert [(e.model_id, e.source) for e in person.embeddings] == [
        ("sface@2021dec", "image:1"),
        ("other@v1", "image:3"),
    ]
    assert person.revision == 2
    assert state.crops("alice") == [crop]
    delta = state.changes_since(1)
    assert delta is not None and [p.person_id for p in delta.upserts] == ["alice"]
    assert state.replace_model_embeddings("nobody", "other@v1", [emb(5, "other@v1")], NOW) is None
    assert state.head_revision() == 2
    assert state.models.people_without_model("other@v1") == []
    assert state.models.people_without_model("third@v1") == ["alice"]


def test_replacing_one_models_embeddings_at_a_revision_skips_a_person_changed_since(state: State) -> None:
    state.add_person(Person("alice", embeddings=(emb(1),)), [], NOW)
    read = state.get_person("alice").revision
    state.update_person("alice", NOW, display_name="Alice")
    assert (
        state.replace_model_embeddings("alice", "other@v1", [emb(2, "other@v1")], NOW, revision=read) is None
    )
    assert state.head_revision() == 2
    assert [e.model_id for e in state.get_person("alice").embeddings] == ["sface@2021dec"]
    current = state.get_person("alice").revision
    assert (
        state.replace_model_embeddings("alice", "other@v1", [emb(2, "other@v1")], NOW, revision=current) == 3
    )
    assert state.replace_model_embeddings("nobody", "other@v1", [emb(2, "other@v1")], NOW, revision=1) is None


def test_retention_deletes_expired_events_and_their_counts_exactly(state: State) -> None:
    months = [datetime(2026, m, 10, 9, 30, tzinfo=timezone.utc) for m in (1, 2, 3, 4)]
    events = [make_event(i, months[i % 4] + timedelta(minutes=i)) for i in range(400)]
    state.add_events(events)
    cut = datetime(2026, 3, 10, tzinfo=timezone.utc)  # drops January and February whole, keeps March on
    everything = EventFilter(
        datetime(2025, 12, 1, tzinfo=timezone.utc), datetime(2026, 6, 1, tzinfo=timezone.utc)
    )
    assert state.expire_events(cut) == 200
    assert state.expire_events(cut) == 0
    left = state.list_events(everything, None, 1000).events
    assert len(left) == 200 and min(e.time for e in left) >= cut
    per_day = {c.start: c.count for c in state.count_events(everything, 86400, per_device=False)}
    assert per_day == {
        datetime(2026, 3, 10, tzinfo=timezone.utc): 100,
        datetime(2026, 4, 10, tzinfo=timezone.utc): 100,
    }
    assert sum(r.face_events for r in state.unknown_rates(everything)) == 200
    # a late event for an expired month is stored again (its partition comes back on PostgreSQL)
    assert state.add_events([make_event(10_000, months[0])]) == (1, 0)
    assert sum(r.face_events for r in state.unknown_rates(everything)) == 201


def test_retention_deletes_expired_audit_entries(state: State) -> None:
    for day in range(10):
        state.add_audit(AuditEntry(NOW + timedelta(days=day), "ops", "people.enrol", f"p{day}"))
    assert state.expire_audit(NOW + timedelta(days=4)) == 4
    page = state.list_audit(AuditFilter(NOW, NOW + timedelta(days=30)), None, 100)
    assert sorted(e.target for e in page.entries) == [f"p{day}" for day in range(4, 10)]


def face_event(i: int, when: datetime) -> Event:
    """An unknown face's event with its snapshot (a small gray crop, no context view)."""
    crop = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1].tobytes()
    embedding = Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128), 0.8)
    return make_event(i, when, camera="porch", snapshot=FaceSnapshot(crop, b"", embedding))


def test_retention_in_batches_deletes_everything_expired_and_nothing_else(state: State) -> None:
    assert isinstance(state, (SqliteState, PostgresState))
    state.expire_batch = state.snapshots.expire_batch = 3
    cut = datetime(2026, 3, 10, tzinfo=timezone.utc)
    state.add_events([face_event(i, cut - timedelta(hours=1 + i)) for i in range(10)])
    state.add_events([face_event(100 + i, cut + timedelta(minutes=i)) for i in range(5)])
    assert state.snapshots.expire_snapshots(cut) == 10
    assert state.expire_events(cut) == 10
    assert (state.snapshots.expire_snapshots(cut), state.expire_events(cut)) == (0, 0)
    everything = EventFilter(cut - timedelta(days=30), cut + timedelta(days=1))
    kept = {str(uuid.UUID(int=100 + i)) for i in range(5)}
    assert {e.event_id for e in state.list_events(everything, None, 100).events} == kept
    page = state.snapshots.list_snapshots(SnapshotFilter(everything.start, everything.end), None, 100)
    assert {s.event_id for s in page.snapshots} == kept
    per_day = {c.start: c.count for c in state.count_events(everything, 86400, per_device=False)}
    assert per_day == {cut: 5}


@pytest.mark.parametrize("what", ["events", "snapshots"])
def test_sqlite_retention_lets_an_ingest_through_between_its_batches(tmp_path: Path, what: str) -> None:
    """Retention deletes in write transactions of expire_batch rows: an event reported through another
    connection (another process, or this server's ingest) while it sweeps waits for one batch, not for
    the whole sweep."""
    state, other = SqliteState(tmp_path / "server.db"), SqliteState(tmp_path / "server.db")
    try:
        state.expire_batch = state.snapshots.expire_batch = 3
        cut = datetime(2026, 3, 10, tzinfo=timezone.utc)
        state.add_events([face_event(i, cut - timedelta(hours=1 + i)) for i in range(10)])
        sweep = state.expire_events if what == "events" else state.snapshots.expire_snapshots
        everything = EventFilter(cut - timedelta(days=30), cut + timedelta(days=1))

        def left() -> int:
            if what == "events":
                return len(other.list_events(everything, None, 100).events)
            flt = SnapshotFilter(everything.start, everything.end)
            return len(other.snapshots.list_snapshots(flt, None, 100).snapshots)

        seen: list[tuple[tuple[int, int], int]] = []

        def ingest() -> None:  # in the sweep's second transaction, which has not begun yet
            seen.append((other.add_events([face_event(1000, cut)]), left()))

        began = 0

        def traced(statement: str) -> None:
            nonlocal began
            if statement == "BEGIN IMMEDIATE":
                began += 1
                if began == 2:
                    reporter = threading.Thread(target=ingest)
                    reporter.start()
                    reporter.join(timeout=60)

        with state.connection() as conn:
            conn.set_trace_callback(traced)
        assert sweep(cut) == 10
        assert seen == [((1, 0), 1 + 10 - 3)]  # stored while the sweep ran, after its first batch
        assert began >= 4  # 3 + 3 + 3 + 1
        assert left() == 1
    finally:
        state.close()
        other.close()


def test_the_review_key_changes_when_a_face_leaves_the_review_as_another_of_its_frame_arrives(
    state: State,
) -> None:
    """Faces of one frame share a time: one dismissed, deleted or enrolled while another of that frame
    arrives late leaves how many faces are under review and their times as they were; the key changes all
    the same."""
    since = NOW - timedelta(days=1)
    crop = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1].tobytes()
    snapshot = FaceSnapshot(
        crop, b"", Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128), 0.8)
    )
    state.add_events([make_event(0, NOW, snapshot=snapshot), make_event(1, NOW, snapshot=snapshot)])
    ways: dict[str, Callable[[str], object]] = {
        "dismissed": lambda event_id: state.snapshots.set_status([event_id], "dismissed"),
        "deleted": lambda event_id: state.snapshots.delete_snapshots([event_id]),
        "enrolled": lambda event_id: state.add_person(
            person(f"p{event_id[-1]}", 2), [], NOW, snapshots=[event_id]
        ),
    }
    keys = [state.snapshots.review_key(since)]
    for n, (way, leave) in enumerate(ways.items(), start=2):
        (leaving, *_) = sorted(s.event_id for s in state.snapshots.unknown_snapshots(since, 10))
        leave(leaving)
        state.add_events([make_event(n, NOW, snapshot=snapshot)])
        assert len(state.snapshots.unknown_snapshots(since, 10)) == 2, way
        key = state.snapshots.review_key(since)
        assert key not in keys, way
        keys.append(key)


def test_the_review_key_moves_with_faces_to_review_only_and_past_32_bits(state: State) -> None:
    """A stored face that was recognised is no face to review: the key stays (and the clusters kept with
    it); a face to review moves it on, also past 2**31 changes (where PostgreSQL's INTEGER stops)."""
    since = NOW - timedelta(days=1)
    crop = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1].tobytes()
    snapshot = FaceSnapshot(
        crop, b"", Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128), 0.8)
    )
    state.add_events([make_event(0, NOW, snapshot=snapshot)])
    key = state.snapshots.review_key(since)
    state.add_events([make_event(1, NOW, decision="match", person_id="alice", snapshot=snapshot)])
    assert state.snapshots.review_key(since) == key
    with state.write() as conn:  # type: ignore[attr-defined]
        set_meta(conn, "snapshot_changes", str(2**31 - 1))
    key = state.snapshots.review_key(since)
    state.add_events([make_event(2, NOW, snapshot=snapshot)])
    assert state.snapshots.review_key(since) != key
    assert len(state.snapshots.unknown_snapshots(since, 10)) == 2


def test_a_sqlite_retention_sweep_that_fails_midway_leaves_no_erased_face_in_the_wal(tmp_path: Path) -> None:
    """Another process holds the write lock when the sweep's second batch begins: the sweep fails, and
    the faces its first batch erased are emptied out of the WAL all the same."""
    state = SqliteState(tmp_path / "server.db")
    other = sqlite3.connect(tmp_path / "server.db", isolation_level=None)
    try:
        state.snapshots.expire_batch = 3
        cut = datetime(2026, 3, 10, tzinfo=timezone.utc)
        rng = np.random.default_rng(7)
        events = []
        for i in range(10):
            noise = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)  # JPEG bytes no other crop shares
            embedding = Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128), 0.8)
            crop = cv2.imencode(".jpg", noise)[1].tobytes()
            events.append(
                make_event(i, cut - timedelta(hours=1 + i), snapshot=FaceSnapshot(crop, b"", embedding))
            )
        state.add_events(events)
        began = 0

        def traced(statement: str) -> None:
            nonlocal began
            if statement == "BEGIN IMMEDIATE":
                began += 1
                if began == 2:  # the second batch
                    other.execute("BEGIN IMMEDIATE")
            elif other.in_transaction:  # done writing by the time the sweep empties the WAL
                other.execute("ROLLBACK")

        with state.connection() as conn:
            conn.execute("PRAGMA busy_timeout = 50")
            conn.set_trace_callback(traced)
        with pytest.raises(StateError, match="database is locked"):
            state.snapshots.expire_snapshots(cut)
        with state.connection() as conn:
            conn.set_trace_callback(None)
        erased = events[-3:]  # the oldest
        flt = SnapshotFilter(cut - timedelta(days=1), cut)
        left = {s.event_id for s in state.snapshots.list_snapshots(flt, None, 100).snapshots}
        assert left == {e.event_id for e in events[:-3]}
        files = (tmp_path / "server.db").read_bytes() + (tmp_path / "server.db-wal").read_bytes()
        for event in erased:
            assert event.snapshot is not None
            middle = len(event.snapshot.crop_jpeg) // 2
            assert event.snapshot.crop_jpeg[middle : middle + 64] not in files
        kept = events[0].snapshot
        assert kept is not None and kept.crop_jpeg[len(kept.crop_jpeg) // 2 :][:64] in files
    finally:
        other.close()
        state.close()


def test_postgresql_retention_drops_whole_monthly_partitions(postgres_cluster: PostgresCluster) -> None:
    state = PostgresState(postgres_cluster.create_database(), pool_size=2)
    try:
        state.add_events(
            [make_event(i, datetime(2026, 1 + i % 3, 5, tzinfo=timezone.utc)) for i in range(30)]
        )
        with state.connection() as conn:
            before = [name for name, *_ in partitions(conn.raw)]  # type: ignore[attr-defined]
        assert before == ["events_2026_01", "events_2026_02", "events_2026_03"]
        with state.connection() as conn:
            rollups = [name for name, *_ in partitions(conn.raw, "event_rollup_hour")]  # type: ignore[attr-defined]
        assert rollups == [
            "event_rollup_hour_2026_01",
            "event_rollup_hour_2026_02",
            "event_rollup_hour_2026_03",
        ]
        assert state.expire_events(datetime(2026, 3, 1, tzinfo=timezone.utc)) == 20
        with state.connection() as conn:
            for table in PARTITIONED:  # the events of the month and every count of them went together
                left = [name for name, *_ in partitions(conn.raw, table)]  # type: ignore[attr-defined]
                assert left == [f"{table}_2026_03"]
            assert expired_tables(conn.raw) == []  # type: ignore[attr-defined]  # detached, then dropped
        # a run that detached March but did not drop it (a crash), then a late event for March: the next
        # run drops the leftovers before it detaches March again under the same names
        with state._raw() as raw, raw.transaction():
            for table in PARTITIONED:
                detach_partition(raw, 2026, 3, table)
        with state.connection() as conn:
            assert "events_2026_03_expired" in expired_tables(conn.raw)  # type: ignore[attr-defined]
        assert state.add_events([make_event(20_000, datetime(2026, 3, 9, tzinfo=timezone.utc))]) == (1, 0)
        assert state.expire_events(datetime(2026, 4, 1, tzinfo=timezone.utc)) == 1
        with state.connection() as conn:
            assert expired_tables(conn.raw) == []  # type: ignore[attr-defined]
            assert partitions(conn.raw) == []  # type: ignore[attr-defined]
    finally:
        state.close()


def test_postgresql_migration_2_partitions_the_rollups_by_month_keeping_every_count(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_cluster.create_database()
    events = [make_event(i, datetime(2026, 1 + i % 3, 5, 8 + i % 5, tzinfo=timezone.utc)) for i in range(60)]
    with psycopg.connect(url, autocommit=True) as raw, raw.transaction():  # as the first release left it
        raw.execute(
            "CREATE TABLE facefleet_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        for statement in MIGRATIONS[0].statements:
            raw.execute(statement)
        raw.execute("INSERT INTO facefleet_migrations VALUES (1, 'initial', 0)")
        for month in (1, 2, 3):
            start, end = month_bounds(2026, month)
            raw.execute(
                f"CREATE TABLE events_2026_0{month} PARTITION OF events FOR VALUES FROM ({start}) TO ({end})"
            )
        assert add_events(PgConnection(raw), events) == (60, 0)
    state = PostgresState(url, pool_size=2)  # migrates to the partitioned rollups
    try:
        everything = EventFilter(
            datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 4, 1, tzinfo=timezone.utc)
        )
        per_day = {c.start.month: c.count for c in state.count_events(everything, 86400, per_device=False)}
        per_hour = state.count_events(everything, 3600, per_device=False)
        assert per_day == {1: 20, 2: 20, 3: 20} and sum(c.count for c in per_hour) == 60
        with state.connection() as conn:  # (no event had attributes: their rollups had no rows to move)
            for table in ("events", "event_rollup_day", "event_rollup_hour"):
                months = [name for name, *_ in partitions(conn.raw, table)]  # type: ignore[attr-defined]
                assert months == [f"{table}_2026_0{month}" for month in (1, 2, 3)]
        assert state.expire_events(datetime(2026, 3, 1, tzinfo=timezone.utc)) == 40
        assert sum(c.count for c in state.count_events(everything, 86400, per_device=False)) == 20
    finally:
        state.close()


def test_a_replaced_face_leaves_no_bytes_in_the_sqlite_file_or_its_wal_and_a_reader_only_delays_that(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = SqliteState(tmp_path / "server.db")
    try:
        old = Crop("png", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "image:0")
        state.add_person(person("alice", 1), [old], NOW)
        reader = sqlite3.connect(tmp_path / "server.db", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM people").fetchone()  # a backup, say, in the middle of its copy
        with caplog.at_level(logging.WARNING):
            state.replace_person(person("alice", 2), [], NOW, append=False)  # returns without waiting for it
        assert "kept the WAL from being emptied" in caplog.text
        reader.execute("ROLLBACK")
        reader.close()
        state.delete_person("alice", NOW)  # the next erase empties it
        files = (tmp_path / "server.db").read_bytes() + (tmp_path / "server.db-wal").read_bytes()
        assert old.data[1000:1064] not in files
    finally:
        state.close()
