"""Row-level SQL of the gallery tables (people, their groups, embeddings and crops) for
facefleet.server.state.sqlite.state.SqliteState: plain functions on a connection, run inside its
transactions."""

from __future__ import annotations

import json
import unicodedata
import weakref
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from facefleet.link.gallery import Embedding, Person
from facefleet.server.domain.queries import from_us, to_us
from facefleet.server.domain.records import Crop
from facefleet.server.errors import NotFoundError
from facefleet.server.state.sql.meta import Connection

CHUNK = 500
"""Most ids in one IN (…) query."""
PERSON_COLUMNS = (
    "p.person_id, p.display_name, p.groups_json, p.metadata_json, p.created_us, p.updated_us, p.revision"
)


def exists(conn: Connection, person_id: str) -> bool:
    return conn.execute("SELECT 1 FROM people WHERE person_id = ?", (person_id,)).fetchone() is not None


def insert_groups(conn: Connection, person_id: str, groups: tuple[str, ...]) -> None:
    conn.executemany(
        "INSERT INTO person_groups (group_name, person_id) VALUES (?, ?)", [(g, person_id) for g in groups]
    )


def insert_embeddings(conn: Connection, person_id: str, embeddings: Sequence[Embedding]) -> None:
    conn.executemany(
        "INSERT INTO embeddings (person_id, model_id, dim, vector, quality, source) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (person_id, e.model_id, e.dim, e.vector.astype("<f4").tobytes(), float(e.quality), e.source)
            for e in embeddings
        ],
    )


def insert_crops(conn: Connection, person_id: str, crops: Sequence[Crop]) -> None:
    conn.executemany(
        "INSERT INTO crops (person_id, image_format, source, data) VALUES (?, ?, ?, ?)",
        [(person_id, c.image_format, c.source, c.data) for c in crops],
    )


def load_person(conn: Connection, person_id: str, *, with_vectors: bool) -> Person:
    if with_vectors:
        people = load_people(conn, [person_id])
        if people:
            return people[0]
    else:
        row = conn.execute(
            f"SELECT {PERSON_COLUMNS} FROM people p WHERE p.person_id = ?",  # noqa: S608
            (person_id,),
        ).fetchone()
        if row:
            return person_from_row(row, ())
    raise NotFoundError(f"person {person_id} is not enrolled")


def load_people(conn: Connection, ids: Sequence[str]) -> list[Person]:
    """The people with these ids that exist, with their embeddings, in the order of ids."""
    people: dict[str, Person] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        marks = ", ".join("?" * len(chunk))
        embeddings: dict[str, list[Embedding]] = {}
        for person_id, model_id, dim, vector, quality, source in conn.execute(
            "SELECT person_id, model_id, dim, vector, quality, source FROM embeddings "  # noqa: S608
            f"WHERE person_id IN ({marks}) ORDER BY person_id, id",
            chunk,
        ):
            array = np.frombuffer(vector, dtype="<f4", count=dim).astype(np.float32)
            embeddings.setdefault(person_id, []).append(Embedding(model_id, array, quality, source))
        for row in conn.execute(
            f"SELECT {PERSON_COLUMNS} FROM people p WHERE p.person_id IN ({marks})",  # noqa: S608
            chunk,
        ):
            people[row[0]] = person_from_row(row, tuple(embeddings.get(row[0], ())))
    return [people[i] for i in ids if i in people]


def person_from_row(row: tuple[object, ...], embeddings: tuple[Embedding, ...]) -> Person:
    person_id, name, groups_json, metadata_json, created_us, updated_us, revision = row
    return Person(
        person_id=str(person_id),
        display_name=str(name),
        groups=tuple(json.loads(str(groups_json))),
        metadata_json=str(metadata_json),
        embeddings=embeddings,
        created_at=from_us(int(str(created_us))),
        updated_at=from_us(int(str(updated_us))),
        revision=int(str(revision)),
    )


def update_fields(conn: Connection, person: Person, now: datetime, revision: int) -> None:
    conn.execute(
        "UPDATE people SET display_name = ?, groups_json = ?, metadata_json = ?, updated_us = ?, "
        "revision = ? WHERE person_id = ?",
        (
            person.display_name,
            json.dumps(list(person.groups)),
            person.metadata_json,
            to_us(now),
            revision,
            person.person_id,
        ),
    )
    conn.execute("DELETE FROM person_groups WHERE person_id = ?", (person.person_id,))
    insert_groups(conn, person.person_id, person.groups)


def insert_person(
    conn: Connection, person: Person, created: datetime, updated: datetime, revision: int
) -> None:
    conn.execute(
        "INSERT INTO people (person_id, display_name, groups_json, metadata_json, created_us, "
        "updated_us, revision) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            person.person_id,
            person.display_name,
            json.dumps(list(person.groups)),
            person.metadata_json,
            to_us(created),
            to_us(updated),
            revision,
        ),
    )
    insert_groups(conn, person.person_id, person.groups)


# -- search by id or name, without regard to case ------------------------------------------------------

SQLITE_FOLD = "facefleet_fold"
"""The SQL function that folds a name for search on SQLite (registered on the connection by search_clause):
its own LOWER() folds ASCII only."""
ICU_COLLATION = "und-x-icu"
_pg_folds: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def fold(text: str) -> str:
    """A name as search compares it: compatibility-normalised (NFKC) and in lower case by Unicode's full
    mapping, as PostgreSQL's lower() under ICU makes it (not case-folded: "STRASSE" does not find
    "Straße" on either backend), so that "ÅNGSTRÖM", "Ångström" and "ångström" are the same."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())


def _like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards and escape character taken as themselves (escape: backslash)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _postgres_fold(conn: Connection) -> str:
    """The SQL that folds `{}` on this PostgreSQL connection: lower() under ICU's root collation, which
    folds every script whatever the database's LC_CTYPE (a C-locale database's lower() folds ASCII only);
    NFKC-normalised first on a UTF8 database. Without ICU, the database's own lower()."""
    raw = getattr(conn, "raw", conn)
    found = _pg_folds.get(raw)
    if found is None:
        utf8, icu = conn.execute(
            "SELECT current_setting('server_encoding') = 'UTF8', "
            "EXISTS (SELECT 1 FROM pg_collation WHERE collname = ?)",
            (ICU_COLLATION,),
        ).fetchone()
        text = "normalize({}, NFKC)" if utf8 else "{}"
        found = f'lower({text} COLLATE "{ICU_COLLATION}")' if icu else f"lower({text})"
        _pg_folds[raw] = found
    return found


def search_clause(conn: Connection, search: str) -> tuple[str, list[str]]:
    """The WHERE clause (and its parameters) of people whose id or display name contains `search`, in any
    case: "ångström" finds "ÅNGSTRÖM", "ярослава" finds "Ярослава". Both sides are folded the same way by
    the database: on SQLite by `fold` itself, registered as a function; on PostgreSQL by lower() (see
    _postgres_fold), with the search NFKC-normalised before its wildcards are escaped (so that a full-width
    ％ is searched for as itself)."""
    register = getattr(conn, "create_function", None)  # SQLite's connection; PostgreSQL's has none
    if register is not None:
        register(SQLITE_FOLD, 1, _sqlite_fold, deterministic=True)
        pattern = _like_pattern(fold(search))
        column = SQLITE_FOLD + "({})"
        compared = "?"
    else:
        pattern = _like_pattern(unicodedata.normalize("NFKC", search))
        column = _postgres_fold(conn)
        compared = f'lower(CAST(? AS TEXT) COLLATE "{ICU_COLLATION}")' if "COLLATE" in column else "lower(?)"
    clause = " OR ".join(
        f"{column.format(name)} LIKE {compared} ESCAPE '\\'" for name in ("p.person_id", "p.display_name")
    )
    return f"({clause})", [pattern, pattern]


def _sqlite_fold(value: str | None) -> str | None:
    return fold(value) if isinstance(value, str) else value
