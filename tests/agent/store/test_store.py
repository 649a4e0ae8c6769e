"""The embedding store on real SQLite files: schema, round trips, validation, atomicity, concurrency."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from facefleet.agent.domain.records import (
    DuplicatePersonError,
    Embedding,
    InvalidEmbeddingError,
    InvalidRecordError,
    Person,
    PersonUpsert,
    RevisionConflictError,
    StoreBusyError,
    StoreError,
    StoreFormatError,
    StoreFullError,
    StoreReadOnlyError,
    UnknownPersonError,
)
from facefleet.agent.recognition.matching import Matcher
from facefleet.agent.store.connection import StoreConnection
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.migrations import MIGRATIONS
from facefleet.agent.store.outbox import OUTBOX_DROPPED
from tests.tmpfs import fill, mounted_tmpfs

MODEL = "sface@2021dec"
FloatArray = npt.NDArray[np.float32]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "agent.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[EmbeddingStore]:
    with EmbeddingStore(store_path) as opened:
        yield opened


def vector(seed: int, dim: int = 128) -> FloatArray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def embedding(seed: int, model: str = MODEL, dim: int = 128) -> Embedding:
    return Embedding(model, vector(seed, dim), quality=0.9, source="test")


def snapshot(store: EmbeddingStore) -> tuple[int, list[tuple[str, str]], dict[str, list[bytes]]]:
    """Revision, people and every stored vector: what must survive a failed change."""
    people = [(p.person_id, p.name) for p in store.gallery.people()]
    vectors = {pid: [e.vector.tobytes() for e in store.gallery.embeddings(pid)] for pid, _ in people}
    return store.gallery.revision(), people, vectors


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema_dump(path: Path) -> tuple[object, ...]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
            conn.execute(
                "SELECT version, name, applied_at FROM facefleet_migrations ORDER BY version"
            ).fetchall(),
            conn.execute("PRAGMA user_version").fetchone(),
            conn.execute("SELECT * FROM gallery").fetchall(),
        )


# ---- schema -----------------------------------------------------------------------------------------------


def test_migrations_run_twice_change_nothing(store_path: Path) -> None:
    with EmbeddingStore(store_path) as store:
        store.gallery.add_person(Person("alice"), [embedding(1)])
        assert store.schema_version() == MIGRATIONS.latest
        assert store.migrate() == []
    before = schema_dump(store_path)
    assert before[2] == (MIGRATIONS.latest,)
    with EmbeddingStore(store_path) as store:
        assert store.migrate() == []
        assert store.gallery.revision() == 1
        assert [p.person_id for p in store.gallery.people()] == ["alice"]
    assert schema_dump(store_path) == before


def test_the_store_uses_wal_and_foreign_keys(store: EmbeddingStore, store_path: Path) -> None:
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.gallery.add_person(Person("alice"), [embedding(1)])
    store.gallery.delete_person("alice")
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone() == (0,)  # ON DELETE CASCADE


def test_integrity_check_is_clean_on_a_good_store_and_finds_orphans(
    store: EmbeddingStore, store_path: Path
) -> None:
    store.gallery.add_person(Person("alice"), [embedding(1), embedding(2)])
    store.outbox.put("facefleet/box/events/face", "{}")
    assert store.integrity_check() == []
    with sqlite3.connect(store_path) as conn:  # foreign keys are off on this raw connection
        blob = vector(3).tobytes()
        conn.execute(
            "INSERT INTO embeddings (person_id, model_id, dim, vector, quality, source, created_at) "
            "VALUES ('ghost', ?, 128, ?, 1.0, '', 0)",
            (MODEL, blob),
        )
    problems = store.integrity_check()
    assert len(problems) == 1 and "missing people row" in problems[0]


# ---- round trips and validation ---------------------------------------------------------------------------

finite_vectors = hnp.arrays(
    np.float32,
    st.integers(32, 512),
    elements=st.floats(-1e6, 1e6, allow_nan=False, width=32),
).filter(lambda v: bool(np.any(v)))


@settings(max_examples=40, deadline=None)
@given(finite_vectors)
def test_vectors_round_trip_unit_normalised(vector: FloatArray) -> None:
    with tempfile.TemporaryDirectory() as directory, EmbeddingStore(Path(directory) / "agent.db") as store:
        given_embedding = Embedding(MODEL, vector)
        store.gallery.upsert_person(Person("alice"), [given_embedding])
        stored = store.gallery.embeddings("alice")[0].vector
        ids, matrix, qualities = store.gallery.load_embeddings(MODEL)
    expected = vector.astype(np.float64) / np.linalg.norm(vector.astype(np.float64))
    assert stored.dtype == np.float32 and matrix.dtype == np.float32
    np.testing.assert_array_equal(stored, given_embedding.vector)
    np.testing.assert_array_equal(matrix, given_embedding.vector[None, :])
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    assert ids == ["alice"] and qualities.tolist() == [1.0]


@given(
    hnp.arrays(np.float32, st.integers(32, 512), elements=st.floats(width=32)).filter(
        lambda v: not np.all(np.isfinite(v))
    )
)
def test_nan_and_infinite_vectors_are_rejected(vector: FloatArray) -> None:
    with pytest.raises(InvalidEmbeddingError, match="NaN or infinity"):
        Embedding(MODEL, vector)


@pytest.mark.parametrize("dim", [32, 128, 512])
def test_zero_vectors_are_rejected(dim: int) -> None:
    with pytest.raises(InvalidEmbeddingError, match="all zeros") as raised:
        Embedding(MODEL, np.zeros(dim, np.float32))
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, StoreError)


def test_a_vector_of_the_wrong_dimension_for_its_model_is_rejected(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("alice"), [embedding(1, dim=128)])
    before = snapshot(store)
    with pytest.raises(InvalidEmbeddingError, match=r"'bob'.*64 dimensions.*have 128"):
        store.gallery.add_person(Person("bob"), [embedding(2, dim=64)])
    with pytest.raises(InvalidEmbeddingError, match="64 dimensions"):
        store.gallery.add_embeddings("alice", [embedding(3, dim=64)])
    assert snapshot(store) == before
    store.gallery.add_person(
        Person("bob"), [embedding(2, model="other@1", dim=64)]
    )  # another model may differ
    assert store.gallery.load_embeddings("other@1").matrix.shape == (1, 64)


def test_different_models_never_mix(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("alice"), [embedding(1), embedding(2, model="arcface@1")])
    store.gallery.add_person(Person("bob"), [embedding(3, model="arcface@1")])
    store.gallery.add_embeddings("bob", [embedding(4)])
    sface = store.gallery.load_embeddings(MODEL)
    arcface = store.gallery.load_embeddings("arcface@1")
    assert sface.person_ids == ["alice", "bob"]
    assert arcface.person_ids == ["alice", "bob"]
    np.testing.assert_array_equal(sface.matrix, np.stack([embedding(1).vector, embedding(4).vector]))
    np.testing.assert_array_equal(arcface.matrix, np.stack([embedding(2).vector, embedding(3).vector]))
    empty = store.gallery.load_embeddings("unknown@0")
    assert (empty.person_ids, empty.matrix.shape, empty.qualities.shape) == ([], (0, 0), (0,))


def test_people_round_trip_with_groups_and_metadata(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("alice", "Alice A.", ("staff", "lab"), {"badge": 7, "tags": ["x"]}))
    alice = store.gallery.person("alice")
    assert (alice.name, alice.groups, alice.metadata) == (
        "Alice A.",
        ("staff", "lab"),
        {"badge": 7, "tags": ["x"]},
    )
    assert alice.created_at is not None and alice.created_at == alice.updated_at
    store.gallery.upsert_person(Person("alice", "Alice B."))
    assert store.gallery.person("alice").name == "Alice B."
    assert store.gallery.person("alice").created_at == alice.created_at


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Person(""), InvalidRecordError),
        (lambda: Person("has space"), InvalidRecordError),
        (lambda: Person("x" * 129), InvalidRecordError),
        (lambda: Person("alice", groups=("has space",)), InvalidRecordError),
        (lambda: Person("alice", metadata={"when": object()}), InvalidRecordError),
        (lambda: Embedding("", vector(1)), InvalidRecordError),
        (lambda: Embedding(MODEL, vector(1), quality=1.5), InvalidRecordError),
        (lambda: Embedding(MODEL, vector(1, dim=5000)), InvalidEmbeddingError),
    ],
)
def test_invalid_records_are_rejected(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("person_id", ["../../x", "door/1", "a#b", "x+y"])
def test_person_ids_written_follow_the_link_id_rule(store: EmbeddingStore, person_id: str) -> None:
    with pytest.raises(InvalidRecordError, match=r"person id '.*' is not valid: use 1–128 letters"):
        store.gallery.add_person(Person(person_id))
    assert store.gallery.people() == []


def test_groups_keep_their_rule_and_people_stored_before_the_id_rule_still_load(
    store: EmbeddingStore, store_path: Path
) -> None:
    store.gallery.add_person(Person("ada.l:2@site-1", groups=("floor/2", "crew+")))
    with sqlite3.connect(store_path) as db:  # as an older agent stored it, before the id rule
        db.execute(
            "INSERT INTO people (person_id, name, groups_json, metadata_json, created_at, updated_at) "
            "VALUES ('josé/old', '', '[]', '{}', 0, 0)"
        )
    people = {p.person_id: p.groups for p in store.gallery.people()}
    assert people == {"ada.l:2@site-1": ("floor/2", "crew+"), "josé/old": ()}
    store.gallery.delete_person("josé/old")
    assert [p.person_id for p in store.gallery.people()] == ["ada.l:2@site-1"]


def test_a_new_store_and_its_wal_are_private_to_the_user(store_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with EmbeddingStore(store_path) as store:
            store.gallery.add_person(Person("alice"))
            files = [store_path, *store_path.parent.glob("agent.db-*")]
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
    finally:
        os.umask(umask)
    assert {"agent.db", "agent.db-wal", "agent.db-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}


def test_unknown_and_duplicate_people_are_clear_errors(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("alice"))
    with pytest.raises(DuplicatePersonError, match=r"'alice' already exists.*upsert_person"):
        store.gallery.add_person(Person("alice"))
    calls: list[Callable[[], object]] = [
        lambda: store.gallery.person("bob"),
        lambda: store.gallery.delete_person("bob"),
        lambda: store.gallery.add_embeddings("bob", [embedding(1)]),
        lambda: store.gallery.remove_embeddings("bob"),
        lambda: store.gallery.embeddings("bob"),
    ]
    for call in calls:
        with pytest.raises(UnknownPersonError, match=f"no person 'bob' in store {store.path}"):
            call()
    assert store.gallery.revision() == 1


# ---- revisions and batches --------------------------------------------------------------------------------


def test_every_gallery_change_bumps_the_revision(store: EmbeddingStore) -> None:
    changes: list[Callable[[], int]] = [
        lambda: store.gallery.add_person(Person("alice"), [embedding(1)]),
        lambda: store.gallery.upsert_person(Person("alice", "Alice")),
        lambda: store.gallery.upsert_person(Person("bob"), [embedding(2)]),
        lambda: store.gallery.add_embeddings("alice", [embedding(3)]),
        lambda: store.gallery.remove_embeddings("alice", MODEL),
        lambda: store.gallery.apply_batch([PersonUpsert(Person("carol"), (embedding(4),))], ["bob"]),
        lambda: store.gallery.delete_person("alice"),
    ]
    for expected, change in enumerate(changes, start=1):
        assert change() == expected
        assert store.gallery.revision() == expected
    store.outbox.put("t", "{}")
    store.audit.append("door1", "match")
    store.gallery.people()
    assert store.gallery.revision() == len(changes)


def test_a_batch_failing_half_way_leaves_the_previous_revision_and_data(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("zoe"), [embedding(0)])
    before = snapshot(store)
    batch = [
        PersonUpsert(Person("alice"), (embedding(1),)),
        PersonUpsert(Person("bob"), (embedding(2),)),
        PersonUpsert(Person("carol"), (embedding(3, dim=256),)),  # the third upsert is invalid
    ]
    with pytest.raises(InvalidEmbeddingError, match="'carol'"):
        store.gallery.apply_batch(batch, deletes=["zoe"])
    assert snapshot(store) == before
    assert store.integrity_check() == []


def test_batch_upserts_replace_embeddings_of_the_given_models_only(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("alice"), [embedding(1), embedding(2), embedding(3, model="arcface@1")])
    store.gallery.apply_batch([PersonUpsert(Person("alice"), (embedding(4),))])
    assert [e.vector.tobytes() for e in store.gallery.embeddings("alice", MODEL)] == [
        embedding(4).vector.tobytes()
    ]
    assert len(store.gallery.embeddings("alice", "arcface@1")) == 1


def test_sync_batches_check_and_set_the_revision(store: EmbeddingStore) -> None:
    assert store.gallery.apply_batch([PersonUpsert(Person("alice"), (embedding(1),))], new_revision=40) == 40
    with pytest.raises(RevisionConflictError, match="revision 40 but the batch was made for revision 39"):
        store.gallery.apply_batch([PersonUpsert(Person("bob"))], expected_revision=39, new_revision=41)
    with pytest.raises(RevisionConflictError, match="only move forward"):
        store.gallery.apply_batch([PersonUpsert(Person("bob"))], expected_revision=40, new_revision=40)
    assert (
        store.gallery.apply_batch([], ["alice", "never-enrolled"], expected_revision=40, new_revision=45)
        == 45
    )
    assert store.gallery.people() == []
    assert store.gallery.apply_batch() == 45  # nothing to do: no new revision


def test_a_batch_naming_a_person_twice_is_rejected(store: EmbeddingStore) -> None:
    with pytest.raises(InvalidRecordError, match="'alice'"):
        store.gallery.apply_batch([PersonUpsert(Person("alice"))], ["alice"])
    assert store.gallery.revision() == 0


def test_matcher_follows_the_store(store: EmbeddingStore) -> None:
    store.gallery.add_person(Person("alice"), [embedding(1)])
    matcher = Matcher()
    assert matcher.refresh(store.gallery, [MODEL])
    assert matcher.identify(vector(2), MODEL).status == "unknown"
    store.gallery.add_person(Person("bob"), [embedding(2)])
    assert matcher.refresh(store.gallery, [MODEL])
    assert matcher.identify(vector(2), MODEL).person_id == "bob"
    assert not matcher.refresh(store.gallery, [MODEL])


# ---- bad files --------------------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(store_path: Path) -> None:
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b"camera notes, definitely not a database\n" * 100)
    digest = sha256(store_path)
    with pytest.raises(StoreFormatError, match=f"file {store_path} is not a FaceFleet store .not an SQLite"):
        EmbeddingStore(store_path)
    assert sha256(store_path) == digest
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["agent.db"]


def test_another_applications_database_is_refused_and_left_unchanged(store_path: Path) -> None:
    store_path.parent.mkdir(parents=True)
    with sqlite3.connect(store_path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    digest = sha256(store_path)
    with pytest.raises(StoreFormatError, match=r"SQLite database but not a FaceFleet store .* invoices"):
        EmbeddingStore(store_path)
    assert sha256(store_path) == digest


def test_a_corrupt_store_is_a_clear_error_and_left_unchanged(store_path: Path) -> None:
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    digest = sha256(store_path)
    with pytest.raises(StoreFormatError, match=f"store {store_path} is corrupt") as info:
        EmbeddingStore(store_path)
    assert sha256(store_path) == digest
    assert info.value.exit_code == 74  # the README's "integrity problem", as `store check` reports damage


def test_a_write_lock_held_too_long_is_a_busy_error(store_path: Path) -> None:
    with EmbeddingStore(store_path, busy_timeout_ms=100) as store:
        holder = sqlite3.connect(store_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError, match=f"store {store_path} is busy"):
            store.gallery.add_person(Person("alice"))
        holder.execute("ROLLBACK")
        holder.close()
        assert store.gallery.add_person(Person("alice")) == 1


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        EmbeddingStore(tmp_path)


def test_read_only_mode_reads_and_refuses_writes(store_path: Path) -> None:
    with EmbeddingStore(store_path) as store:
        store.gallery.add_person(Person("alice"), [embedding(1)])
    digest = sha256(store_path)
    with EmbeddingStore(store_path, read_only=True) as store:
        assert [p.person_id for p in store.gallery.people()] == ["alice"]
        assert store.gallery.load_embeddings(MODEL).matrix.shape == (1, 128)
        writes: list[Callable[[], object]] = [
            lambda: store.gallery.add_person(Person("bob")),
            lambda: store.gallery.delete_person("alice"),
            lambda: store.outbox.put("t", "{}"),
        ]
        for write in writes:
            with pytest.raises(StoreReadOnlyError, match=f"store {store_path} was opened read-only"):
                write()
    assert sha256(store_path) == digest


def _open_as_nobody(path: str, results: multiprocessing.Queue[tuple[str, str]]) -> None:  # runs in a child
    if os.geteuid() == 0:  # root ignores file permissions: drop to nobody first
        os.setgid(65534)
        os.setuid(65534)
    try:
        EmbeddingStore(Path(path)).close()
        results.put(("opened", ""))
    except StoreError as exc:
        results.put((type(exc).__name__, str(exc)))


@pytest.mark.parametrize("read_only", ["file", "directory"])
def test_a_read_only_store_is_a_clear_error_and_loses_nothing(read_only: str) -> None:
    directory = Path(tempfile.mkdtemp(prefix="facefleet-ro-"))  # outside pytest's 0700 tmp dirs
    try:
        path = directory / "agent.db"
        with EmbeddingStore(path) as store:
            store.gallery.add_person(Person("alice"), [embedding(1)])
        digest = sha256(path)
        if read_only == "file":
            directory.chmod(0o755)
            path.chmod(0o444)
        else:
            directory.chmod(0o555)
            path.chmod(0o666)
        results: multiprocessing.Queue[tuple[str, str]] = multiprocessing.get_context("fork").Queue()
        child = multiprocessing.get_context("fork").Process(target=_open_as_nobody, args=(str(path), results))
        child.start()
        child.join(30)
        kind, message = results.get(timeout=5)
        assert kind == "StoreReadOnlyError"
        assert str(path) in message
        assert sha256(path) == digest
    finally:
        directory.chmod(0o755)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        shutil.rmtree(directory)


# ---- concurrency and crashes ------------------------------------------------------------------------------


def test_two_store_objects_on_one_file_write_concurrently(store_path: Path) -> None:
    first, second = EmbeddingStore(store_path), EmbeddingStore(store_path)
    errors: list[BaseException] = []

    def enrol(store: EmbeddingStore, prefix: str) -> None:
        try:
            for i in range(30):
                store.gallery.add_person(Person(f"{prefix}{i}"), [embedding(i)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enrol, args=(s, p)) for s, p in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(first.gallery.people()) == len(second.gallery.people()) == 60
    assert first.gallery.revision() == second.gallery.revision() == 60
    first.close()
    second.close()


_WRITER = """
import sys
from pathlib import Path
import numpy as np
from facefleet.agent.domain.records import Embedding, Person
from facefleet.agent.store.database import EmbeddingStore
with EmbeddingStore(Path(sys.argv[1])) as store:
    for i in range(int(sys.argv[2])):
        vector = np.random.default_rng(i).standard_normal(128).astype(np.float32)
        store.gallery.add_person(Person(f"{sys.argv[3]}{i}"), [Embedding("sface@2021dec", vector)])
"""


def test_a_store_created_while_another_opening_checks_it_is_not_taken_for_a_foreign_file(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening that checks reads the schema version (0: nothing yet), then another opening creates the
    store and commits its tables, then the first lists the tables. Read in one transaction, the first sees
    either no tables or the tables with their version, never tables without a version."""
    check = StoreConnection.schema_version
    other: list[threading.Thread] = []
    failures: list[BaseException] = []

    def create() -> None:
        try:
            EmbeddingStore(store_path).close()
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    def version_then_another_creates(self: StoreConnection) -> int:
        version = check(self)
        if not other:
            other.append(threading.Thread(target=create))
            other[0].start()
            other[0].join(timeout=1.0)  # it may commit now, or wait for this opening's read to end
        return version

    monkeypatch.setattr(StoreConnection, "schema_version", version_then_another_creates)
    with EmbeddingStore(store_path) as store:
        other[0].join(timeout=30)
        assert failures == [] and not other[0].is_alive()
        assert store.schema_version() == MIGRATIONS.latest


def test_a_second_process_writes_concurrently(store: EmbeddingStore, store_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store_path), "40", "child"], stderr=subprocess.PIPE
    )
    for i in range(40):
        store.gallery.add_person(Person(f"parent{i}"), [embedding(i)])
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr.decode()
    assert len(store.gallery.people()) == 80
    assert store.gallery.revision() == 80
    assert store.gallery.load_embeddings(MODEL).matrix.shape == (80, 128)


def test_processes_creating_a_new_store_at_once_all_succeed(store_path: Path) -> None:
    children = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(store_path), "3", name], stderr=subprocess.PIPE)
        for name in ("a", "b", "c")
    ]
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr.decode()
    with EmbeddingStore(store_path) as store:
        assert len(store.gallery.people()) == 9
        assert store.schema_version() == MIGRATIONS.latest
        assert store.integrity_check() == []


_CRASHER = """
import os, sys
from pathlib import Path
import numpy as np
from facefleet.agent.domain.records import Embedding, Person, PersonUpsert
from facefleet.agent.store import gallery
from facefleet.agent.store.database import EmbeddingStore
calls = 0
original = gallery._write_upsert
def crash_on_third(*args):
    global calls
    calls += 1
    if calls == 3:
        os._exit(3)  # like a power cut: no rollback, no close
    original(*args)
gallery._write_upsert = crash_on_third
store = EmbeddingStore(Path(sys.argv[1]))
vector = np.ones(128, np.float32)
batch = [PersonUpsert(Person(f"p{i}"), (Embedding("sface@2021dec", vector),)) for i in range(5)]
store.gallery.apply_batch(batch, ["zoe"])
"""


def test_a_crash_mid_write_leaves_the_previous_state(store_path: Path) -> None:
    with EmbeddingStore(store_path) as store:
        store.gallery.add_person(Person("zoe"), [embedding(0)])
        before = snapshot(store)
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(_CRASHER), str(store_path)], check=False)
    assert child.returncode == 3
    with EmbeddingStore(store_path) as store:
        assert snapshot(store) == before
        assert store.integrity_check() == []


# ---- outbox, counters, audit log --------------------------------------------------------------------------


def test_replies_beyond_their_own_limit_are_refused_and_push_no_event_out(store_path: Path) -> None:
    """An outbox of 10 holding 3 events: two replies fit their limit of 2, the third is refused (None), and
    the events all stay; events themselves are not held to the replies' limit."""
    with EmbeddingStore(store_path, outbox_limit=10) as store:
        events = [store.outbox.put("events/face", f'{{"n": {n}}}') for n in range(3)]
        replies = [store.outbox.put("replies/verify", "{}", same_kind_limit=2) for _ in range(3)]
        assert replies[2] is None and None not in replies[:2]
        assert store.outbox.put("replies-x/verify", "{}", same_kind_limit=2) is not None  # another kind
        assert [m.message_id for m in store.outbox.pending()][:3] == events
        assert store.outbox.dropped() == 0
        assert store.outbox.put("events/face", "{}", same_kind_limit=3) is None  # 3 events wait


def test_outbox_keeps_order_and_drops_the_oldest_when_full_counting_them(store_path: Path) -> None:
    with EmbeddingStore(store_path, outbox_limit=3) as store:
        ids = [store.outbox.put("facefleet/box/events/face", f'{{"n": {n}}}') for n in range(5)]
        pending = store.outbox.pending()
        assert [m.message_id for m in pending] == ids[2:]
        assert [m.payload for m in pending] == ['{"n": 2}', '{"n": 3}', '{"n": 4}']
        assert store.counter(OUTBOX_DROPPED) == store.outbox.dropped() == 2
        assert store.outbox.delete(ids[2])
        assert not store.outbox.delete(ids[2])
        assert [m.message_id for m in store.outbox.pending(limit=1)] == [ids[3]]
        assert store.outbox.count() == 2
        assert store.outbox.delete_many([]) == 0
    with EmbeddingStore(store_path, outbox_limit=3) as store:  # durable across restarts
        assert [m.message_id for m in store.outbox.pending()] == ids[3:]
        assert store.outbox.delete_many([ids[3], ids[2], 999]) == 1
        assert [m.message_id for m in store.outbox.pending()] == [ids[4]]
        assert store.counter(OUTBOX_DROPPED) == 2


@pytest.mark.parametrize(("topic", "qos"), [("", 1), ("t", 3)])
def test_bad_outbox_messages_are_rejected(store: EmbeddingStore, topic: str, qos: int) -> None:
    with pytest.raises(InvalidRecordError):
        store.outbox.put(topic, "{}", qos)
    assert store.outbox.count() == 0


def test_audit_log_appends_and_prunes_by_age(store: EmbeddingStore) -> None:
    for at, decision in ((100.0, "match"), (200.0, "unknown"), (300.0, "match")):
        store.audit.append("door1", decision, person_id="alice", score=0.7, details={"camera": "c1"}, at=at)
    assert store.audit.prune(older_than=250.0) == 2
    entries = store.audit.entries()
    assert [(e.time, e.decision, e.person_id, e.details) for e in entries] == [
        (300.0, "match", "alice", {"camera": "c1"})
    ]
    assert store.increment("doors_opened", 2) == 2
    assert store.counter("doors_opened") == 2


def test_a_write_on_a_full_disk_is_a_store_full_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" is told apart (the model updater retries a switch it stopped)."""
    crowd = [PersonUpsert(Person(f"p{index}"), (embedding(index),)) for index in range(200)]
    with mounted_tmpfs(tmp_path / "disk", "1m") as disk, EmbeddingStore(disk / "agent.db") as store:
        store.gallery.apply_batch([PersonUpsert(Person("alice"), (embedding(1),))])
        revision = store.gallery.revision()
        fill(disk)
        with pytest.raises(
            StoreFullError, match=r"the disk is full .*free space there - nothing was written"
        ):
            store.gallery.apply_batch(crowd)
        (disk / "filler").unlink()
        assert [p.person_id for p in store.gallery.people()] == ["alice"]
        assert store.gallery.revision() == revision
