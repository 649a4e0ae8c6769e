"""A wipe (the server revoked this device with --wipe) on real SQLite: everything that names or shows a person
goes in one transaction, the file is scrubbed, and a wipe that meets a busy store says so, leaves nothing
reported done that is not, and can be repeated."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facefleet.agent.domain.records import Embedding, Person, StoreBusyError
from facefleet.agent.store.database import EmbeddingStore
from facefleet.link.gallery import Embedding as LinkEmbedding
from facefleet.link.gallery import GalleryDelta
from facefleet.link.gallery import Person as LinkPerson
from tests.agent.store.test_store_snapshots import face_event

MODEL = "sface@2021dec"


def filled(store: EmbeddingStore, photo: npt.NDArray[np.uint8]) -> list[bytes]:
    """A store as a door box leaves it: a person, events waiting for the server with their face snapshots,
    an MQTT message and an audit entry naming the person. Bytes of each to look for in the file."""
    vector = np.random.default_rng(7).normal(size=128).astype(np.float32)
    store.gallery.add_person(Person("eileen", "Eileen Collins"), [Embedding(MODEL, vector, 0.9, "server")])
    events = [face_event(n, photo) for n in range(3)]
    for event in events:
        store.reports.put(event)
    store.outbox.put("access/front", json.dumps({"person_id": "eileen", "name": "Eileen Collins"}))
    store.audit.append("front", "granted", person_id="eileen", score=0.91)
    snapshot = events[0].snapshot
    assert snapshot is not None
    (stored,) = store.gallery.embeddings("eileen")
    return [
        b"Eileen Collins",
        stored.vector.astype("<f4").tobytes()[:32],
        snapshot.crop_jpeg[100:164],
        snapshot.embedding.vector.astype("<f4").tobytes()[:32],
    ]


def disk_image(path: Path) -> bytes:
    """The store file and its write-ahead log, as someone holding the disk would read them."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def checkpointed(store: EmbeddingStore) -> None:
    """Everything written so far moved from the write-ahead log into the store file."""
    with store.connection.read() as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0


def test_a_wipe_erases_every_person_event_snapshot_message_and_audit_entry_and_scrubs_the_file(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path) as store:
        traces = filled(store, astronaut)
        checkpointed(store)
        assert all(trace in disk_image(path) for trace in traces)
        wiped = store.wipe()
        assert (wiped.people, wiped.reports, wiped.snapshots, wiped.outbox, wiped.audit) == (1, 3, 3, 1, 1)
        assert store.gallery.people() == [] and store.audit.entries() == []
        assert (store.reports.count(), store.snapshots.count(), store.outbox.count()) == (0, 0, 0)
        # erased, not lost: nothing is counted as dropped
        assert (store.reports.dropped(), store.snapshots.dropped(), store.outbox.dropped()) == (0, 0, 0)
        assert store.sync.point().revision == 0 and store.integrity_check() == []
    image = disk_image(path)
    assert [trace for trace in traces if trace in image] == []


def test_a_wipe_that_meets_a_busy_store_erases_nothing_and_can_be_repeated(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path, busy_timeout_ms=100) as store:
        filled(store, astronaut)
        writer = sqlite3.connect(path, isolation_level=None)  # e.g. `facefleet-agent enroll` at work
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError, match="busy"):
            store.wipe()
        assert (len(store.gallery.people()), store.reports.count(), store.outbox.count()) == (1, 3, 1)
        writer.execute("ROLLBACK")
        writer.close()
        assert store.wipe().people == 1
        assert store.gallery.people() == []


def test_a_scrub_a_reader_keeps_from_replacing_the_old_pages_is_not_reported_done(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    path = tmp_path / "agent.db"
    with EmbeddingStore(path, busy_timeout_ms=100) as store:
        traces = filled(store, astronaut)
        checkpointed(store)
        reader = sqlite3.connect(path, isolation_level=None)  # a read that holds the old pages
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM people").fetchone()
        with pytest.raises(StoreBusyError, match="erased pages are still on disk"):
            store.wipe()
        assert store.gallery.people() == []  # erased in the store's view...
        assert all(trace in path.read_bytes() for trace in traces)  # ...but still in the file
        reader.execute("ROLLBACK")
        reader.close()
        assert store.wipe().people == 0  # the repeat erases nothing more, and scrubs
    image = disk_image(path)
    assert [trace for trace in traces if trace in image] == []


def test_a_person_the_server_deletes_leaves_no_bytes_of_their_embeddings_in_the_file_or_its_log(
    tmp_path: Path,
) -> None:
    vector = np.random.default_rng(11).normal(size=128).astype(np.float32)
    person = LinkPerson("eileen", "Eileen Collins", embeddings=(LinkEmbedding(MODEL, vector, 0.9),))
    with EmbeddingStore(tmp_path / "agent.db") as store:
        store.sync.apply(GalleryDelta(0, 1, snapshot=True, upserts=(person,), gallery_id="g"))
        (stored,) = store.gallery.embeddings("eileen")
        marks = [b"Eileen Collins", stored.vector.astype("<f4").tobytes()[:32]]
        store.sync.apply(GalleryDelta(1, 2, deletes=("eileen",), gallery_id="g"))
        files = (tmp_path / "agent.db").read_bytes() + (tmp_path / "agent.db-wal").read_bytes()
        assert [p.person_id for p in store.gallery.people()] == []
    assert [mark in files for mark in marks] == [False, False]


def test_what_the_box_writes_after_a_wipe_is_found_and_the_next_order_erases_it(
    tmp_path: Path, astronaut: npt.NDArray[np.uint8]
) -> None:
    """The frame loop may still name an erased person for a moment (a track's votes, a pending claim): the
    server repeats its order at every call, and each repeat erases what was written since."""
    with EmbeddingStore(tmp_path / "agent.db") as store:
        filled(store, astronaut)
        store.wipe()
        assert not store.holds_personal_data()
        store.audit.append("front", "granted", person_id="eileen", score=0.93)
        assert store.holds_personal_data()
        store.wipe()
        assert not store.holds_personal_data()


def test_erasing_a_person_while_another_process_reads_the_store_does_not_wait_for_it(tmp_path: Path) -> None:
    """The write-ahead log is emptied only when nobody reads; with a reader it is left for later, and the
    delete returns at once instead of holding the store (and the frame loop) for the busy timeout."""
    path = tmp_path / "agent.db"
    with EmbeddingStore(path, busy_timeout_ms=120_000) as store:
        vector = np.random.default_rng(3).normal(size=128).astype(np.float32)
        store.gallery.add_person(Person("ann", "Ann"), [Embedding(MODEL, vector, 0.9, "server")])
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM people").fetchone()  # another process's read, still open
        deleting = threading.Thread(target=store.gallery.delete_person, args=("ann",), daemon=True)
        deleting.start()
        deleting.join(60)  # the busy timeout is two minutes: only a delete that does not wait is done by now
        done = not deleting.is_alive()
        reader.execute("ROLLBACK")
        reader.close()
        assert done
        assert [p.person_id for p in store.gallery.people()] == []
