"""`EmbeddingStore`, the object callers open: the agent's store file (facefleet.agent.store.connection)
with its parts as attributes — `gallery` (people, embeddings, revision), `outbox` (MQTT), `audit` (door
decisions), `sync` (the fleet server's sync point), `reports` (events queued for the server), `snapshots`
(the face snapshots of those events) and `retained` (the MQTT topics it published retained messages on).

    with EmbeddingStore(state_dir / "agent.db") as store:
        store.gallery.add_person(Person("alice"), embeddings)
        store.outbox.put("events/face", payload)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facefleet.agent.store.audit import AuditLog
from facefleet.agent.store.connection import DEFAULT_BUSY_TIMEOUT_MS, StoreConnection
from facefleet.agent.store.gallery import GalleryStore
from facefleet.agent.store.migrations import MIGRATIONS
from facefleet.agent.store.outbox import DEFAULT_OUTBOX_LIMIT, Outbox
from facefleet.agent.store.reports import DEFAULT_REPORT_LIMIT, PreparedReport, ReportQueue
from facefleet.agent.store.retained import RetainedTopics
from facefleet.agent.store.snapshots import (
    DEFAULT_SNAPSHOT_KEEP_S,
    DEFAULT_SNAPSHOT_LIMIT_BYTES,
    SnapshotQueue,
)
from facefleet.agent.store.sync import ServerSync


@dataclass(frozen=True)
class Wiped:
    """What a wipe erased (EmbeddingStore.wipe): rows of each kind, and the store's revision after it."""

    people: int
    reports: int
    snapshots: int
    outbox: int
    audit: int
    revision: int

    def __str__(self) -> str:
        return (
            f"{self.people} people with their embeddings, {self.reports} events queued for the server with "
            f"{self.snapshots} face snapshots, {self.outbox} MQTT messages and {self.audit} audit entries"
        )


class EmbeddingStore:
    """The SQLite store at `path`, created (with its directory) if missing and migrated on open.

    Safe to share between threads and between processes. read_only opens an existing store without writing
    anything; every write then raises StoreReadOnlyError. upgrade=False (every command but `run` and
    `store migrate`) creates a new store but refuses an older one (StoreOutdatedError), untouched.
    outbox_limit, report_limit: how many messages and reports may wait before the oldest are dropped;
    snapshot_limit_bytes, snapshot_keep_s: how many bytes of face snapshots may wait, and for how long (s);
    busy_timeout_ms: how long a write waits for another process's write lock. check: run SQLite's
    quick_check at open and refuse a damaged file (StoreCorruptError, exit 74); by default when the open
    upgrades (the service at start, `store migrate`); its cost: facefleet.agent.store.connection.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        upgrade: bool = True,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        outbox_limit: int = DEFAULT_OUTBOX_LIMIT,
        report_limit: int = DEFAULT_REPORT_LIMIT,
        snapshot_limit_bytes: int = DEFAULT_SNAPSHOT_LIMIT_BYTES,
        snapshot_keep_s: float = DEFAULT_SNAPSHOT_KEEP_S,
        check: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.connection = StoreConnection(
            self.path,
            MIGRATIONS,
            read_only=read_only,
            upgrade=upgrade,
            busy_timeout_ms=busy_timeout_ms,
            check=check,
        )
        self.upgraded = self.connection.upgraded
        """The migrations this open applied."""
        try:
            self.gallery = GalleryStore(self.connection)
            self.outbox = Outbox(self.connection, outbox_limit)
            self.audit = AuditLog(self.connection)
            self.sync = ServerSync(self.connection, self.gallery)
            self.snapshots = SnapshotQueue(self.connection, snapshot_limit_bytes, snapshot_keep_s)
            self.reports = ReportQueue(self.connection, report_limit, self.snapshots)
            self.retained = RetainedTopics(self.connection)
        except BaseException:
            self.connection.close()
            raise

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    def wipe(self) -> Wiped:
        """Erase everything that names or shows a person, in one transaction: the gallery (people and their
        embeddings, and the server sync point), the events queued for the server with their face snapshots,
        the MQTT outbox and the audit log; then scrub the file (VACUUM, and the write-ahead log emptied),
        so none of it can be read back from the disk image. The server revoked this device and ordered it
        (a lost or stolen box). StoreError when the store cannot be written or scrubbed: nothing is erased,
        or erased but not yet scrubbed; either way, call it again."""
        with self.connection.write() as conn:
            people, revision = self.sync.erase(conn)
            reports, snapshots = self.reports.clear(conn)
            outbox = self.outbox.clear(conn)
            audit = self.audit.clear(conn)
        self.connection.scrub()
        return Wiped(people, reports, snapshots, outbox, audit, revision)

    def holds_personal_data(self) -> bool:
        """Whether anything a wipe erases is in the store: people, queued events or face snapshots, MQTT
        messages, audit entries (the frame loop may have written some since the last wipe)."""
        tables = ("people", "reports", "snapshots", "outbox", "audit_log")
        with self.connection.read() as conn:
            return any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in tables)  # noqa: S608

    def queue_event(self, topic: str, payload: str, report: PreparedReport) -> None:
        """An event's MQTT message and its report for the server, in one transaction: both or neither."""
        with self.connection.write() as conn:
            self.outbox.add(conn, topic, payload)
            self.reports.add(conn, report)

    def migrate(self) -> list[str]:
        """Apply pending migrations; the names applied (empty when up to date)."""
        return self.connection.migrate()

    def schema_version(self) -> int:
        """How many migrations have been applied (also in PRAGMA user_version)."""
        return self.connection.schema_version()

    def counter(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""
        return self.connection.counter(name)

    def increment(self, name: str, by: int = 1) -> int:
        """Add to a counter; its new value."""
        return self.connection.increment(name, by)

    def integrity_check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks and the gallery's invariants; empty
        when the store is healthy. The invariants are left out when SQLite already finds damage (reading
        them may fail on it)."""
        problems = self.connection.integrity_check()
        return problems or self.gallery.problems()
