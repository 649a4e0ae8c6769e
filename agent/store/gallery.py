"""The gallery in the store: enrolled people, their embeddings per embedding model, and the gallery
revision, which every gallery change moves forward inside its own transaction (the matcher follows it).

Vectors are kept as (D,) float32 little-endian blobs, L2-normalised; `load_embeddings` reads every vector of
one model in one query and views the joined blobs with numpy. `change_people`, `bump` and `read_revision`
work inside a caller's write transaction (the server sync applies its deltas with them).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from facefleet.agent.domain.records import (
    DuplicatePersonError,
    Embedding,
    EmbeddingMatrix,
    InvalidEmbeddingError,
    InvalidRecordError,
    ModelSummary,
    Person,
    PersonUpsert,
    RevisionConflictError,
    StoreFormatError,
    UnknownPersonError,
    check_person_id,
    json_text,
)
from facefleet.agent.store.connection import StoreConnection

_PERSON_SELECT = "SELECT person_id, name, groups_json, metadata_json, created_at, updated_at FROM people"


class GalleryStore:
    """People, embeddings and the gallery revision of one store; each method is one transaction."""

    def __init__(self, connection: StoreConnection) -> None:
        self._connection = connection

    # ---- writes -------------------------------------------------------------------------------------------

    def add_person(self, person: Person, embeddings: Sequence[Embedding] = ()) -> int:
        """Enrol a new person (DuplicatePersonError if the id exists); the new gallery revision."""
        with self._connection.write() as conn:
            if _person_exists(conn, person.person_id):
                raise DuplicatePersonError(
                    f"person {person.person_id!r} already exists in store {self._connection.path}; "
                    "use upsert_person to replace them"
                )
            _write_upsert(conn, PersonUpsert(person, tuple(embeddings)), _model_dims(conn), time.time())
            return self.bump(conn)

    def enrol(
        self, person: Person, embeddings: Sequence[Embedding], *, add: bool = False
    ) -> tuple[int, bool]:
        """Enrol a person in one write transaction, so that two enrolments of one id at once cannot both
        insert it: a new person (DuplicatePersonError if the id exists, unless add), or with add more
        samples of an enrolled one, whose stored samples stay, whose groups gain person's and whose name
        becomes person's unless that is empty. The new gallery revision, and whether the person existed."""
        with self._connection.write() as conn:
            row = conn.execute(f"{_PERSON_SELECT} WHERE person_id = ?", (person.person_id,)).fetchone()
            if row is None:
                _write_upsert(conn, PersonUpsert(person, tuple(embeddings)), _model_dims(conn), time.time())
                return self.bump(conn), False
            if not add:
                raise DuplicatePersonError(
                    f"person {person.person_id!r} already exists in store {self._connection.path}; "
                    "add samples to them, or use another id"
                )
            stored = _person_from_row(row)
            merged = Person(
                person.person_id,
                person.name or stored.name,
                tuple(dict.fromkeys([*stored.groups, *person.groups])),
                stored.metadata,
            )
            now = time.time()
            _write_upsert(conn, PersonUpsert(merged, ()), _model_dims(conn), now)
            _insert_embeddings(conn, person.person_id, embeddings, _model_dims(conn), now, replace=False)
            return self.bump(conn), True

    def upsert_person(self, person: Person, embeddings: Sequence[Embedding] = ()) -> int:
        """Insert or update a person; their embeddings of the given models are replaced. The new revision."""
        return self.apply_batch([PersonUpsert(person, tuple(embeddings))])

    def add_embeddings(self, person_id: str, embeddings: Sequence[Embedding]) -> int:
        """Add samples to an enrolled person, keeping the stored ones; the new revision."""
        with self._connection.write() as conn:
            self._require_person(conn, person_id)
            if not embeddings:
                return self.read_revision(conn)
            now = time.time()
            _insert_embeddings(conn, person_id, embeddings, _model_dims(conn), now, replace=False)
            conn.execute("UPDATE people SET updated_at = ? WHERE person_id = ?", (now, person_id))
            return self.bump(conn)

    def remove_embeddings(self, person_id: str, model_id: str | None = None) -> int:
        """Remove a person's embeddings (of one model, or all); the new revision."""
        with self._connection.write() as conn:
            self._require_person(conn, person_id)
            cursor = conn.execute(
                "DELETE FROM embeddings WHERE person_id = ? AND (? IS NULL OR model_id = ?)",
                (person_id, model_id, model_id),
            )
            return self.bump(conn) if cursor.rowcount else self.read_revision(conn)

    def delete_person(self, person_id: str) -> int:
        """Delete a person and their embeddings; the new revision."""
        with self._connection.write() as conn:
            self._require_person(conn, person_id)
            conn.execute("DELETE FROM people WHERE person_id = ?", (person_id,))
            revision = self.bump(conn)
        self._connection.forget_erased()
        return revision

    def apply_batch(
        self,
        upserts: Sequence[PersonUpsert] = (),
        deletes: Sequence[str] = (),
        *,
        expected_revision: int | None = None,
        new_revision: int | None = None,
    ) -> int:
        """Apply person upserts and deletes all together or not at all; the resulting revision.

        Deletes of absent ids are no-ops (a sync delta may repeat one). expected_revision: the revision the
        batch was computed against (RevisionConflictError otherwise); new_revision: the revision to record
        (must move forward), else the current one plus 1. An empty batch changes nothing.
        """
        upserts, deletes = tuple(upserts), tuple(deletes)
        _check_batch_ids(upserts, deletes)
        path = self._connection.path
        with self._connection.write() as conn:
            current = self.read_revision(conn)
            if expected_revision is not None and expected_revision != current:
                raise RevisionConflictError(
                    f"store {path} is at gallery revision {current} but the batch was made for "
                    f"revision {expected_revision}; fetch the changes since {current} (or a full snapshot)"
                )
            if new_revision is not None and not (isinstance(new_revision, int) and new_revision > current):
                raise RevisionConflictError(
                    f"the batch would set gallery revision {new_revision!r} but store {path} is already "
                    f"at {current}; revisions only move forward"
                )
            if not upserts and not deletes and new_revision is None:
                return current
            self.change_people(conn, upserts, deletes, whole_people=False)
            revision = current + 1 if new_revision is None else new_revision
            conn.execute("UPDATE gallery SET revision = ? WHERE id = 1", (revision,))
        if deletes:
            self._connection.forget_erased()
        return revision

    # ---- reads --------------------------------------------------------------------------------------------

    def revision(self) -> int:
        """The gallery revision: changes with every gallery change (cheap: one indexed read)."""
        with self._connection.read() as conn:
            return self.read_revision(conn)

    def people(self) -> list[Person]:
        """Every enrolled person, by id."""
        with self._connection.read() as conn:
            rows = conn.execute(f"{_PERSON_SELECT} ORDER BY person_id").fetchall()
        return [_person_from_row(row) for row in rows]

    def person(self, person_id: str) -> Person:
        with self._connection.read() as conn:
            row = conn.execute(f"{_PERSON_SELECT} WHERE person_id = ?", (person_id,)).fetchone()
        if row is None:
            raise self._unknown_person(person_id)
        return _person_from_row(row)

    def embeddings(self, person_id: str, model_id: str | None = None) -> list[Embedding]:
        """A person's embeddings (of one model, or all), oldest first."""
        with self._connection.read() as conn:
            self._require_person(conn, person_id)
            rows = conn.execute(
                "SELECT model_id, vector, quality, source, id, created_at FROM embeddings "
                "WHERE person_id = ? AND (? IS NULL OR model_id = ?) ORDER BY id",
                (person_id, model_id, model_id),
            ).fetchall()
        return [
            Embedding(model, np.frombuffer(blob, "<f4").astype(np.float32), quality, source, eid, created)
            for model, blob, quality, source, eid, created in rows
        ]

    def models(self) -> list[ModelSummary]:
        """What is stored per embedding model, by model id."""
        with self._connection.read() as conn:
            rows = conn.execute(
                "SELECT model_id, MIN(dim), COUNT(*), COUNT(DISTINCT person_id) FROM embeddings "
                "GROUP BY model_id ORDER BY model_id"
            ).fetchall()
        return [ModelSummary(model, dim, count, people) for model, dim, count, people in rows]

    def load_embeddings(self, model_id: str) -> EmbeddingMatrix:
        """Every embedding of one model in one query; the blobs are joined and viewed by numpy, not parsed."""
        with self._connection.read() as conn:
            rows = conn.execute(
                "SELECT person_id, quality, vector FROM embeddings WHERE model_id = ? ORDER BY person_id, id",
                (model_id,),
            ).fetchall()
        if not rows:
            return EmbeddingMatrix([], np.empty((0, 0), np.float32), np.empty(0, np.float32))
        person_ids, qualities, blobs = zip(*rows, strict=True)
        dim = len(blobs[0]) // 4
        joined = bytearray().join(blobs)
        if len(joined) != 4 * dim * len(rows):
            raise StoreFormatError(
                f"store {self._connection.path}: embeddings of model {model_id!r} have mixed dimensions; "
                "run the store integrity check and re-sync the gallery"
            )
        matrix = np.frombuffer(joined, "<f4").astype(np.float32, copy=False).reshape(len(rows), dim)
        return EmbeddingMatrix(list(person_ids), matrix, np.asarray(qualities, np.float32))

    def problems(self) -> list[str]:
        """Broken gallery invariants (mixed dimensions within a model, the revision row); empty when fine."""
        with self._connection.read() as conn:
            problems = [
                f"embeddings of model {model!r} have {dims} different dimensions"
                for model, dims in conn.execute(
                    "SELECT model_id, COUNT(DISTINCT dim) FROM embeddings GROUP BY model_id "
                    "HAVING COUNT(DISTINCT dim) > 1"
                )
            ]
            if conn.execute("SELECT COUNT(*) FROM gallery").fetchone()[0] != 1:
                problems.append("gallery table must hold exactly one revision row")
        return problems

    # ---- inside a caller's transaction --------------------------------------------------------------------

    @staticmethod
    def read_revision(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT revision FROM gallery WHERE id = 1").fetchone()[0])

    @staticmethod
    def bump(conn: sqlite3.Connection) -> int:
        """Move the revision on by one; the new revision."""
        conn.execute("UPDATE gallery SET revision = revision + 1 WHERE id = 1")
        return GalleryStore.read_revision(conn)

    @staticmethod
    def change_people(
        conn: sqlite3.Connection,
        upserts: Sequence[PersonUpsert],
        deletes: Sequence[str],
        *,
        whole_people: bool,
    ) -> None:
        """Delete, then upsert (the caller moves the revision). whole_people: an upsert replaces all of the
        person's embeddings, not only those of its models."""
        conn.executemany("DELETE FROM people WHERE person_id = ?", [(p,) for p in deletes])
        if whole_people:
            conn.executemany(
                "DELETE FROM embeddings WHERE person_id = ?", [(u.person.person_id,) for u in upserts]
            )
        dims, now = _model_dims(conn), time.time()
        for upsert in upserts:
            _write_upsert(conn, upsert, dims, now)

    def _require_person(self, conn: sqlite3.Connection, person_id: str) -> None:
        if not _person_exists(conn, person_id):
            raise self._unknown_person(person_id)

    def _unknown_person(self, person_id: str) -> UnknownPersonError:
        return UnknownPersonError(
            f"no person {person_id!r} in store {self._connection.path}; list the enrolled people or enrol "
            "them first"
        )


def _person_exists(conn: sqlite3.Connection, person_id: str) -> bool:
    return conn.execute("SELECT 1 FROM people WHERE person_id = ?", (person_id,)).fetchone() is not None


def _model_dims(conn: sqlite3.Connection) -> dict[str, int]:
    """model id → the dimension its stored embeddings have."""
    rows = conn.execute("SELECT model_id, MIN(dim) FROM embeddings GROUP BY model_id").fetchall()
    return {model: int(dim) for model, dim in rows}


def _write_upsert(conn: sqlite3.Connection, upsert: PersonUpsert, dims: dict[str, int], now: float) -> None:
    person = upsert.person
    check_person_id(person.person_id)
    groups, metadata = json_text("groups", list(person.groups)), json_text("metadata", person.metadata)
    conn.execute(
        "INSERT INTO people (person_id, name, groups_json, metadata_json, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET name = excluded.name, "
        "groups_json = excluded.groups_json, metadata_json = excluded.metadata_json, "
        "updated_at = excluded.updated_at",
        (person.person_id, person.name, groups, metadata, now, now),
    )
    _insert_embeddings(conn, person.person_id, upsert.embeddings, dims, now, replace=True)


def _insert_embeddings(
    conn: sqlite3.Connection,
    person_id: str,
    embeddings: Sequence[Embedding],
    dims: dict[str, int],
    now: float,
    *,
    replace: bool,
) -> None:
    """Check each embedding's dimension against its model's (first one seen fixes it), then write."""
    for embedding in embeddings:
        expected = dims.setdefault(embedding.model_id, embedding.dim)
        if embedding.dim != expected:
            raise InvalidEmbeddingError(
                f"person {person_id!r}: embedding for model {embedding.model_id!r} has {embedding.dim} "
                f"dimensions, but that model's embeddings have {expected}; compute it with the same model"
            )
    if replace:
        conn.executemany(
            "DELETE FROM embeddings WHERE person_id = ? AND model_id = ?",
            [(person_id, model) for model in {e.model_id for e in embeddings}],
        )
    conn.executemany(
        "INSERT INTO embeddings (person_id, model_id, dim, vector, quality, source, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (person_id, e.model_id, e.dim, e.vector.astype("<f4").tobytes(), float(e.quality), e.source, now)
            for e in embeddings
        ],
    )


def _person_from_row(row: tuple[Any, ...]) -> Person:
    person_id, name, groups_json, metadata_json, created_at, updated_at = row
    return Person(
        person_id, name, tuple(json.loads(groups_json)), json.loads(metadata_json), created_at, updated_at
    )


def _check_batch_ids(upserts: Sequence[PersonUpsert], deletes: Sequence[str]) -> None:
    counts = Counter(u.person.person_id for u in upserts)
    repeated = {p for p, n in counts.items() if n > 1} | (counts.keys() & set(deletes))
    if repeated:
        raise InvalidRecordError(
            f"batch names person(s) {', '.join(sorted(map(repr, repeated)))} more than once; "
            "send one change per person"
        )
