"""The server state's behaviour in portable SQL (facefleet.server.state.sql.meta): every `State` method as
one transaction on a connection the backend lends. SqliteState and PostgresState add connections,
transactions, locking and schemas.

A write that allocates a gallery revision reads and bumps the head in the meta table: the backend's write
transaction must serialise such writes (SQLite's BEGIN IMMEDIATE; a transaction-scoped advisory lock on
PostgreSQL). Event ingest goes through `ingest()`, which a backend may run without that lock."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime

from facefleet.link.checks import MAX_EMBEDDINGS_PER_PERSON
from facefleet.link.events import Event
from facefleet.link.fleet import Registration
from facefleet.link.gallery import Embedding, GalleryDelta, Person
from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter, AuditPage
from facefleet.server.domain.paging import PageSeal
from facefleet.server.domain.queries import (
    AttributeCounts,
    DoorAccess,
    EventCursor,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
    to_us,
)
from facefleet.server.domain.records import AgentInfo, Crop, TokenRecord
from facefleet.server.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from facefleet.server.state.interface import State
from facefleet.server.state.sql import agents as sql_agents
from facefleet.server.state.sql import audit as sql_audit
from facefleet.server.state.sql import events as sql_events
from facefleet.server.state.sql import people as sql_people
from facefleet.server.state.sql import snapshots as sql_snapshots
from facefleet.server.state.sql.meta import (
    EXPIRE_BATCH_ROWS,
    Connection,
    add_page_key,
    get_meta,
    page_seal,
    set_meta,
)


class SqlState(State):
    """`State` on a SQL backend: subclasses lend connections and transactions."""

    log_revisions: int
    event_rows: sql_events.EventRows = sql_events.VALUES_LISTS
    """How event batches are inserted (a backend may have a faster way than the portable SQL)."""
    aggregate_in_one_statement = False
    """How the dashboard aggregates sum the segments of a range (see sql.events._aggregate)."""
    expire_batch = EXPIRE_BATCH_ROWS
    """Rows retention deletes per write transaction."""

    @abc.abstractmethod
    def connection(self) -> AbstractContextManager[Connection]:
        """A connection for one statement (no transaction of its own)."""

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[Connection]:
        """One read transaction: every query inside sees the same committed state."""

    @abc.abstractmethod
    def write(self) -> AbstractContextManager[Connection]:
        """One write transaction, serialised against every other write(): committed when the body returns,
        rolled back when it raises."""

    def erased(self) -> None:
        """After a write that erased faces (a person, snapshots, expired rows): make the erased bytes
        unreadable where the backend keeps copies of them (PostgreSQL: its VACUUM, as autovacuum runs it)."""

    def _start_gallery(self) -> None:
        """Give a new database its gallery id and revision 0 (once its migrations have run), and any database
        its page-token key."""
        with self.write() as conn:
            if get_meta(conn, "gallery_id", "") == "":
                set_meta(conn, "gallery_id", str(uuid.uuid4()))
                set_meta(conn, "head_revision", "0")
                set_meta(conn, "log_floor", "0")
            add_page_key(conn)  # a state from before page tokens were sealed gets its key too

    def ingest(self) -> AbstractContextManager[Connection]:
        """The write transaction of events, their rollups and their snapshots. It changes no gallery
        revision, and moves one meta counter (the snapshots' change count) in one statement, its last. By
        default write(); on PostgreSQL not serialised against the other writes."""
        return self.write()

    # -- gallery -------------------------------------------------------------------------------------

    def gallery_id(self) -> str:
        with self.connection() as conn:
            return get_meta(conn, "gallery_id", "")

    def head_revision(self) -> int:
        with self.connection() as conn:
            return int(get_meta(conn, "head_revision", "0"))

    def page_seal(self) -> PageSeal:
        return page_seal(self)

    def add_person(
        self, person: Person, crops: Sequence[Crop], now: datetime, *, snapshots: Sequence[str] = ()
    ) -> Person:
        with self.write() as conn:
            if sql_people.exists(conn, person.person_id):
                raise AlreadyExistsError(
                    f"person {person.person_id} is already enrolled; choose another id, or replace or "
                    "append to them (on_existing)"
                )
            revision = self._next_revision(conn, [(person.person_id, "upsert")], now)
            sql_people.insert_person(conn, person, now, now, revision)
            sql_people.insert_embeddings(conn, person.person_id, person.embeddings)
            sql_people.insert_crops(conn, person.person_id, crops)
            sql_snapshots.mark_enrolled(conn, snapshots, person.person_id)
            return sql_people.load_person(conn, person.person_id, with_vectors=True)

    def replace_person(
        self,
        person: Person,
        crops: Sequence[Crop],
        now: datetime,
        *,
        append: bool,
        snapshots: Sequence[str] = (),
    ) -> Person:
        replaced = False
        with self.write() as conn:
            revision = self._next_revision(conn, [(person.person_id, "upsert")], now)
            if not sql_people.exists(conn, person.person_id):
                sql_people.insert_person(conn, person, now, now, revision)
            elif append:
                conn.execute(
                    "UPDATE people SET updated_us = ?, revision = ? WHERE person_id = ?",
                    (to_us(now), revision, person.person_id),
                )
            else:
                # the face is replaced: every embedding and crop of the old one goes, of every model, even
                # when the new enrolment brings fewer (a model it lacks is embedded from its crops, or
                # the person needs enrolling again for it; never matched on the replaced face)
                conn.execute("DELETE FROM embeddings WHERE person_id = ?", (person.person_id,))
                conn.execute("DELETE FROM crops WHERE person_id = ?", (person.person_id,))
                replaced = True
                sql_people.update_fields(conn, person, now, revision)
            sql_people.insert_embeddings(conn, person.person_id, person.embeddings)
            sql_people.insert_crops(conn, person.person_id, crops)
            _check_embedding_count(conn, person.person_id, "replace them instead of appending")
            sql_snapshots.mark_enrolled(conn, snapshots, person.person_id)
            stored = sql_people.load_person(conn, person.person_id, with_vectors=True)
        if replaced:
            self.erased()
        return stored

    def update_person(
        self,
        person_id: str,
        now: datetime,
        *,
        display_name: str | None = None,
        groups: tuple[str, ...] | None = None,
        metadata_json: str | None = None,
    ) -> Person:
        with self.write() as conn:
            current = sql_people.load_person(conn, person_id, with_vectors=False)
            updated = Person(
                person_id=person_id,
                display_name=current.display_name if display_name is None else display_name,
                groups=current.groups if groups is None else groups,
                metadata_json=current.metadata_json if metadata_json is None else metadata_json,
            )
            revision = self._next_revision(conn, [(person_id, "upsert")], now)
            sql_people.update_fields(conn, updated, now, revision)
            return sql_people.load_person(conn, person_id, with_vectors=True)

    def replace_model_embeddings(
        self,
        person_id: str,
        model_id: str,
        embeddings: Sequence[Embedding],
        now: datetime,
        *,
        revision: int | None = None,
    ) -> int | None:
        with self.write() as conn:
            row = conn.execute("SELECT revision FROM people WHERE person_id = ?", (person_id,)).fetchone()
            if row is None or (revision is not None and int(row[0]) != revision):
                return None
            new = self._next_revision(conn, [(person_id, "upsert")], now)
            conn.execute("DELETE FROM embeddings WHERE person_id = ? AND model_id = ?", (person_id, model_id))
            sql_people.insert_embeddings(conn, person_id, [e for e in embeddings if e.model_id == model_id])
            _check_embedding_count(conn, person_id, "enrol them again with fewer photos")
            conn.execute(
                "UPDATE people SET updated_us = ?, revision = ? WHERE person_id = ?",
                (to_us(now), new, person_id),
            )
            return new

    def delete_person(self, person_id: str, now: datetime) -> int:
        with self.write() as conn:
            if not sql_people.exists(conn, person_id):
                raise NotFoundError(f"person {person_id} is not enrolled")
            revision = self._next_revision(conn, [(person_id, "delete")], now)
            conn.execute("DELETE FROM people WHERE person_id = ?", (person_id,))
            # their face snapshots go with them: those they were enrolled from, and those agents matched
            sql_snapshots.delete_person_snapshots(conn, person_id)
        self.erased()
        return revision

    def get_person(self, person_id: str, *, with_vectors: bool = True) -> Person:
        with self.read() as conn:
            return sql_people.load_person(conn, person_id, with_vectors=with_vectors)

    def list_people(
        self,
        *,
        after: str = "",
        limit: int = 100,
        group: str = "",
        search: str = "",
        person_ids: Sequence[str] = (),
    ) -> list[Person]:
        columns = sql_people.PERSON_COLUMNS
        joined = "JOIN person_groups g USING (person_id) " if group else ""
        clauses, params = ["p.person_id > ?"], [after]
        if group:
            clauses.append("g.group_name = ?")
            params.append(group)
        if person_ids:
            clauses.append(f"p.person_id IN ({', '.join('?' * len(person_ids))})")
            params += list(person_ids)
        with self.read() as conn:
            if search:
                clause, searched = sql_people.search_clause(conn, search)
                clauses.append(clause)
                params += searched
            rows = conn.execute(
                f"SELECT {columns} FROM people p {joined}WHERE {' AND '.join(clauses)} "  # noqa: S608
                "ORDER BY p.person_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [sql_people.person_from_row(row, ()) for row in rows]

    def crop_counts(self, person_ids: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(person_ids, 0)
        ids = list(counts)
        with self.read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                counts.update(
                    conn.execute(
                        f"SELECT person_id, COUNT(*) FROM crops WHERE person_id IN ({marks}) "  # noqa: S608
                        "GROUP BY person_id",
                        chunk,
                    ).fetchall()
                )
        return counts

    def crops(self, person_id: str) -> list[Crop]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT image_format, data, source FROM crops WHERE person_id = ? ORDER BY id", (person_id,)
            ).fetchall()
        return [Crop(image_format=fmt, data=bytes(data), source=source) for fmt, data, source in rows]

    def changes_since(self, revision: int) -> GalleryDelta | None:
        with self.read() as conn:
            head = int(get_meta(conn, "head_revision", "0"))
            if revision < int(get_meta(conn, "log_floor", "0")) or revision > head:
                return None
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT person_id FROM gallery_changes WHERE revision > ? ORDER BY person_id",
                    (revision,),
                )
            ]
            people = sql_people.load_people(conn, ids)
            found = {p.person_id for p in people}
            return GalleryDelta(
                from_revision=revision,
                to_revision=head,
                snapshot=False,
                upserts=tuple(people),
                deletes=tuple(i for i in ids if i not in found),
                gallery_id=get_meta(conn, "gallery_id", ""),
            )

    def snapshot(self) -> GalleryDelta:
        with self.read() as conn:
            ids = [row[0] for row in conn.execute("SELECT person_id FROM people ORDER BY person_id")]
            return GalleryDelta(
                from_revision=0,
                to_revision=int(get_meta(conn, "head_revision", "0")),
                snapshot=True,
                upserts=tuple(sql_people.load_people(conn, ids)),
                gallery_id=get_meta(conn, "gallery_id", ""),
            )

    def _next_revision(self, conn: Connection, changes: list[tuple[str, str]], now: datetime) -> int:
        """Allocate the next revision, log its changes, and drop log entries past the retention."""
        revision = int(get_meta(conn, "head_revision", "0")) + 1
        conn.executemany(
            "INSERT INTO gallery_changes (revision, person_id, op, committed_us) VALUES (?, ?, ?, ?)",
            [(revision, person_id, op, to_us(now)) for person_id, op in changes],
        )
        set_meta(conn, "head_revision", str(revision))
        floor = revision - self.log_revisions
        if floor > int(get_meta(conn, "log_floor", "0")):
            conn.execute("DELETE FROM gallery_changes WHERE revision <= ?", (floor,))
            set_meta(conn, "log_floor", str(floor))
        return revision

    # -- agents --------------------------------------------------------------------------------------

    def register_agent(self, registration: Registration, now: datetime) -> AgentInfo:
        with self.write() as conn:
            return sql_agents.register_agent(conn, registration, now)

    def get_agent(self, device_id: str) -> AgentInfo | None:
        with self.connection() as conn:
            agents = sql_agents.load_agents(conn, (device_id,))
        return agents[0] if agents else None

    def touch_agent(
        self,
        device_id: str,
        now: datetime,
        *,
        gallery_revision: int | None = None,
        health: Mapping[str, float] | None = None,
    ) -> None:
        with self.write() as conn:
            sql_agents.touch_agent(conn, device_id, now, gallery_revision, health)

    def list_agents(self, device_ids: Sequence[str] = ()) -> list[AgentInfo]:
        with self.connection() as conn:
            return sql_agents.load_agents(conn, tuple(device_ids) or None)

    # -- events --------------------------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> tuple[int, int]:
        with self.ingest() as conn:
            outcome = sql_events.add_events(conn, events, self.event_rows)
            sql_snapshots.add_snapshots(conn, events)
            return outcome

    def event_devices(self, event_ids: Sequence[str]) -> dict[str, str]:
        with self.connection() as conn:
            return self.event_rows.stored(conn, event_ids)

    def list_events(self, flt: EventFilter, cursor: EventCursor | None, limit: int) -> EventPage:
        key = self.page_seal()
        if cursor is not None:
            cursor.check(key, flt)
        with self.connection() as conn:
            page = sql_events.list_events(conn, flt, cursor, limit)
        return replace(page, next_cursor=page.next_cursor and page.next_cursor.sealed(key, flt))

    def count_events(
        self, flt: EventFilter, interval_s: int, *, per_device: bool = True
    ) -> list[IntervalCount]:
        with self.read() as conn:
            return sql_events.count_events(
                conn, flt, interval_s, per_device=per_device, one_statement=self.aggregate_in_one_statement
            )

    def expression_counts(self, flt: EventFilter, *, per_device: bool) -> list[ExpressionCount]:
        with self.read() as conn:
            return sql_events.expression_counts(
                conn, flt, per_device=per_device, one_statement=self.aggregate_in_one_statement
            )

    def unknown_rates(self, flt: EventFilter) -> list[UnknownRate]:
        with self.read() as conn:
            return sql_events.unknown_rates(conn, flt, one_statement=self.aggregate_in_one_statement)

    def access_summary(self, flt: EventFilter) -> list[DoorAccess]:
        with self.read() as conn:
            return sql_events.access_summary(conn, flt, one_statement=self.aggregate_in_one_statement)

    def attribute_counts(self, flt: EventFilter) -> list[AttributeCounts]:
        with self.read() as conn:
            return sql_events.attribute_counts(conn, flt, one_statement=self.aggregate_in_one_statement)

    def expire_events(self, before: datetime) -> int:
        """In transactions of expire_batch events each, as ingest (it changes no gallery or counter), then
        the expired rollup buckets: ingest and the other writes wait for one batch at most."""
        before_us, expired = to_us(before), 0
        while True:
            with self.ingest() as conn:
                deleted = sql_events.expire_some_events(conn, before_us, self.expire_batch)
            expired += deleted
            if deleted < self.expire_batch:
                break
        with self.ingest() as conn:
            sql_events.expire_rollups(conn, before_us)
        return expired

    # -- tokens --------------------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self.write() as conn:
            sql_agents.add_token(conn, record)

    def find_token(self, token_id: str) -> TokenRecord | None:
        with self.connection() as conn:
            return sql_agents.find_token(conn, token_id)

    def list_tokens(self) -> list[TokenRecord]:
        with self.connection() as conn:
            return sql_agents.list_tokens(conn)

    def revoke_token(self, name: str) -> None:
        with self.write() as conn:
            sql_agents.revoke_token(conn, name)

    # -- admin audit log -----------------------------------------------------------------------------

    def add_audit(self, entry: AuditEntry) -> AuditEntry:
        with self.write() as conn:
            return sql_audit.add_audit(conn, entry)

    def list_audit(self, flt: AuditFilter, after: AuditCursor | None, limit: int) -> AuditPage:
        key = self.page_seal()
        if after is not None:
            after.check(key, flt)
        with self.connection() as conn:
            page = sql_audit.list_audit(conn, flt, after, limit)
        return replace(page, next_cursor=page.next_cursor and page.next_cursor.sealed(key, flt))

    def expire_audit(self, before: datetime) -> int:
        with self.write() as conn:
            return sql_audit.expire_audit(conn, to_us(before))


def _check_embedding_count(conn: Connection, person_id: str, fix: str) -> None:
    """InvalidArgumentError (the write rolls back) when the person now has more than
    MAX_EMBEDDINGS_PER_PERSON embeddings: one over it could not be loaded, nor any gallery delta with it."""
    count = conn.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = ?", (person_id,)).fetchone()[0]
    if count > MAX_EMBEDDINGS_PER_PERSON:
        raise InvalidArgumentError(
            f"person {person_id} would have {count} embeddings, over the limit of "
            f"{MAX_EMBEDDINGS_PER_PERSON}; {fix}"
        )
