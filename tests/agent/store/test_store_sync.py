"""The store's server-sync tables on real SQLite: migration 0002, applying server deltas atomically with their
revision, the snapshot reset path, and the bounded, durable queue of typed events to report."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.domain.records import (
    Embedding,
    InvalidEmbeddingError,
    InvalidRecordError,
    Person,
    RevisionConflictError,
    StoreError,
)
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.reports import REPORTS_DROPPED, REPORTS_REFUSED
from facefleet.link.events import Event, ExpressionResult
from facefleet.link.gallery import Embedding as LinkEmbedding
from facefleet.link.gallery import GalleryDelta
from facefleet.link.gallery import Person as LinkPerson
from tests.agent.store.legacy import make_legacy_store

MODEL = "sface@2021dec"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddingStore]:
    with EmbeddingStore(tmp_path / "agent.db") as opened:
        yield opened


def emb(seed: int, model: str = MODEL, dim: int = 128) -> Embedding:
    return Embedding(model, np.random.default_rng(seed).normal(size=dim).astype(np.float32), 0.9, "server")


def link_emb(seed: int, dim: int = 128) -> LinkEmbedding:
    return LinkEmbedding(MODEL, np.random.default_rng(seed).normal(size=dim).astype(np.float32), 0.9, "")


def upsert(person_id: str, *seeds: int, name: str = "") -> LinkPerson:
    """A person as a server delta carries them."""
    return LinkPerson(person_id, name, embeddings=tuple(link_emb(s) for s in seeds))


def state(store: EmbeddingStore) -> tuple[object, ...]:
    """Everything a failed apply must leave as it was."""
    people = {
        p.person_id: (p.name, [e.vector.tobytes() for e in store.gallery.embeddings(p.person_id)])
        for p in store.gallery.people()
    }
    return store.gallery.revision(), store.sync.point(), people


def test_migration_0002_upgrades_a_store_keeping_its_people(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = make_legacy_store(path, upto=1)  # a store written before sync existed
    db.execute("INSERT INTO people (person_id, created_at, updated_at) VALUES ('alice', 0, 0)")
    db.execute("UPDATE gallery SET revision = 4")
    db.conn.commit()
    db.close()
    with EmbeddingStore(path) as store:
        assert [p.person_id for p in store.gallery.people()] == ["alice"]
        assert store.gallery.revision() == 4
        point = store.sync.point()
        assert (point.revision, point.gallery_id, point.models, point.applied_at) == (0, "", (), None)
        assert store.reports.count() == 0
        assert store.integrity_check() == []


def test_the_servers_cluster_threshold_is_kept_across_a_reopen_and_a_change_is_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        assert store.sync.cluster_threshold() is None  # no Register yet
        assert store.sync.record_cluster_threshold(0.42)
        assert not store.sync.record_cluster_threshold(0.42)  # the same again: no change
    with EmbeddingStore(path, read_only=True) as store:
        assert store.sync.cluster_threshold() == 0.42
    with EmbeddingStore(path) as store:
        assert store.sync.record_cluster_threshold(None)  # a server that no longer says
        assert store.sync.cluster_threshold() is None
        with pytest.raises(StoreError, match="CHECK constraint failed"), store.connection.write() as conn:
            conn.execute("UPDATE server_sync SET cluster_threshold = 1.5")


def test_a_delta_is_applied_with_its_server_revision_and_moves_the_store_revision(
    store: EmbeddingStore,
) -> None:
    store.sync.apply(
        GalleryDelta(0, 3, snapshot=True, upserts=(upsert("alice", 1), upsert("bob", 2)), gallery_id="g"),
        [MODEL],
    )
    before = store.gallery.revision()
    revision = store.sync.apply(
        GalleryDelta(3, 5, upserts=(upsert("carol", 3),), deletes=("bob",), gallery_id="g"), [MODEL]
    )
    assert revision == store.gallery.revision() == before + 1
    assert [p.person_id for p in store.gallery.people()] == ["alice", "carol"]
    point = store.sync.point()
    assert (point.revision, point.gallery_id, point.models) == (5, "g", (MODEL,))
    assert point.applied_at is not None


def test_a_server_upsert_replaces_all_of_the_persons_embeddings(store: EmbeddingStore) -> None:
    store.gallery.upsert_person(Person("alice"), [emb(1), emb(2, "arcface@r100", 512)])
    store.sync.apply(GalleryDelta(0, 1, snapshot=True, upserts=(upsert("alice", 7, name="Alice"),)), [MODEL])
    (only,) = store.gallery.embeddings("alice")
    assert (only.model_id, only.vector.tobytes()) == (MODEL, link_emb(7).vector.tobytes())
    assert store.gallery.person("alice").name == "Alice"


def test_an_empty_delta_records_the_revision_without_moving_the_store(store: EmbeddingStore) -> None:
    store.sync.apply(GalleryDelta(0, 0, snapshot=True, gallery_id="g"), [MODEL])
    store.sync.apply(GalleryDelta(0, 2, gallery_id="g"), [MODEL])  # e.g. an enrolment then its deletion
    assert (store.gallery.revision(), store.sync.point().revision) == (0, 2)


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (
            GalleryDelta(2, 4, upserts=(upsert("carol", 3),), gallery_id="g"),
            "starts at 2; watch again from revision 3",
        ),
        (GalleryDelta(3, 4, deletes=("alice",), gallery_id="other"), "delta is for gallery 'other'"),
    ],
)
def test_a_delta_that_does_not_continue_the_stored_gallery_changes_nothing(
    store: EmbeddingStore, delta: GalleryDelta, message: str
) -> None:
    store.sync.apply(
        GalleryDelta(0, 3, snapshot=True, upserts=(upsert("alice", 1),), gallery_id="g"), [MODEL]
    )
    before = state(store)
    with pytest.raises(RevisionConflictError) as info:
        store.sync.apply(delta, [MODEL])
    assert message in str(info.value)
    assert state(store) == before


def test_a_delta_failing_half_way_changes_nothing(store: EmbeddingStore) -> None:
    store.sync.apply(
        GalleryDelta(0, 1, snapshot=True, upserts=(upsert("alice", 1),), gallery_id="g"), [MODEL]
    )
    before = state(store)
    wrong_dim = LinkPerson("bob", embeddings=(link_emb(2, dim=64),))
    with pytest.raises(
        InvalidEmbeddingError, match="has 64 dimensions, but that model's embeddings have 128"
    ):
        store.sync.apply(
            GalleryDelta(1, 2, upserts=(upsert("carol", 3), wrong_dim), deletes=("alice",)), [MODEL]
        )
    assert state(store) == before


def test_a_snapshot_resets_the_gallery_even_to_a_lower_revision_of_another_gallery(
    store: EmbeddingStore,
) -> None:
    store.sync.apply(
        GalleryDelta(0, 50, snapshot=True, upserts=(upsert("alice", 1), upsert("bob", 2)), gallery_id="old"),
        [MODEL],
    )
    store.gallery.add_person(Person("local"), [emb(9)])  # enrolled on the box itself
    before = store.gallery.revision()
    store.sync.apply(
        GalleryDelta(0, 3, snapshot=True, upserts=(upsert("bob", 5), upsert("carol", 6)), gallery_id="new"),
        [MODEL],
    )
    assert [p.person_id for p in store.gallery.people()] == ["bob", "carol"]
    assert store.gallery.embeddings("bob")[0].vector.tobytes() == link_emb(5).vector.tobytes()
    assert store.gallery.revision() == before + 1  # forward, so the matcher reloads
    point = store.sync.point()
    assert (point.revision, point.gallery_id) == (3, "new")


def test_an_unjoined_part_is_refused(store: EmbeddingStore) -> None:
    with pytest.raises(InvalidRecordError, match="join the parts"):
        store.sync.apply(GalleryDelta(0, 1, snapshot=True, more_parts=True), [MODEL])


# -- the reports queue -------------------------------------------------------------------------------------


def event(n: int = 0) -> Event:
    """A face event as the agent reports it (values exact in float32, as the wire keeps them)."""
    return Event(
        event_id=str(uuid.uuid4()),
        device_id="door-box",
        time=datetime(2025, 1, 31, 12, tzinfo=timezone.utc) + timedelta(seconds=n, microseconds=250),
        kind="face",
        decision="match",
        camera="front",
        person_id="alice",
        score=0.75,
        expression=ExpressionResult("happy", {"happy": 0.75, "neutral": 0.25}),
        quality=0.5,
        model_versions={"embedding": MODEL},
        gallery_revision=7,
        reason=f"track decided after {n} frames",
    )


def test_reports_queue_in_order_once_per_event_and_survive_a_restart(tmp_path: Path) -> None:
    events = [event(i) for i in range(5)]
    with EmbeddingStore(tmp_path / "agent.db") as store:
        assert [store.reports.put(e, gallery_revision=7) for e in events] == [True] * 5
        assert store.reports.put(events[0]) is False  # already queued
        assert store.reports.pending(limit=0) == []
    with EmbeddingStore(tmp_path / "agent.db") as store:
        queued = store.reports.pending(limit=3)
        assert [r.event for r in queued] == events[:3]
        assert [(r.event_id, r.gallery_revision) for r in queued] == [(e.event_id, 7) for e in events[:3]]
        assert store.reports.delete([r.report_id for r in queued]) == 3
        assert store.reports.delete([queued[0].report_id]) == 0
        assert store.reports.delete([]) == 0
        assert [r.event for r in store.reports.pending()] == events[3:]
        assert store.reports.count() == 2


def test_a_full_report_queue_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    with EmbeddingStore(tmp_path / "agent.db", report_limit=3) as store:
        events = [event(i) for i in range(5)]
        for queued in events:
            store.reports.put(queued)
        assert [r.event for r in store.reports.pending()] == events[2:]
        assert store.reports.dropped() == store.counter(REPORTS_DROPPED) == 2


def test_events_the_server_refused_are_counted_once_as_they_leave_the_queue(tmp_path: Path) -> None:
    with EmbeddingStore(tmp_path / "agent.db") as store:
        for n in range(4):
            store.reports.put(event(n))
        queued = store.reports.pending()
        ids = [r.report_id for r in queued]
        assert store.reports.delete(ids[:3], refused=[ids[1], ids[2], ids[3]]) == 3  # the 4th is not acked
        assert store.reports.delete(ids[:3], refused=ids[:3]) == 0  # a repeated acknowledgement
        assert store.reports.delete([ids[3]]) == 1  # stored: not counted
        assert (store.reports.count(), store.reports.dropped()) == (0, 0)
    with EmbeddingStore(tmp_path / "agent.db") as store:
        assert store.reports.refused() == store.counter(REPORTS_REFUSED) == 2


@pytest.mark.parametrize("event_id", [None, "", "x" * 65, "é-not-ascii", 17])
def test_a_report_without_a_usable_event_id_is_refused(store: EmbeddingStore, event_id: object) -> None:
    unusable = event()
    object.__setattr__(unusable, "event_id", event_id)  # Event refuses these itself; the store checks again
    with pytest.raises(InvalidRecordError, match="needs an event_id of 1–64 ASCII characters"):
        store.reports.put(unusable)
    assert store.reports.count() == 0


def test_a_queued_event_that_no_longer_decodes_is_dropped_and_counted(
    store: EmbeddingStore, tmp_path: Path
) -> None:
    first, second = event(1), event(2)
    store.reports.put(first)
    store.reports.put(second)
    with sqlite3.connect(tmp_path / "agent.db") as conn:  # a damaged row
        conn.execute("UPDATE reports SET event = X'ffff' WHERE event_id = ?", (first.event_id,))
    conn.close()
    assert [r.event for r in store.reports.pending()] == [second]
    assert (store.reports.count(), store.reports.dropped()) == (1, 1)
