"""The store's schema, as numbered migrations (facefleet.core.migrations): append new ones, never edit one
that has shipped. 1: people, embeddings, gallery revision, outbox, audit log, counters; 2: the server sync
point and the report queue (events as JSON text); 3: the report queue holds link Events as protobuf bytes;
4: face snapshots beside the reports of their events; 5: the server's cluster threshold; 6: the MQTT topics
the agent published retained messages on.

Stores migrated before this runner existed recorded their migrations with sqlite-utils, in its
`_sqlite_migrations` table (set "facefleet-agent-store", names "0001_initial" and "0002_sync"): such a store
is adopted at that version, and in the same transaction its old record is replaced by a row named MARKER.
Every store this runner migrates or creates gets that row: agents of those days read a migration they do not
know as a store written by a newer FaceFleet, and refuse it saying so (without it they would call the store
"not a FaceFleet store").
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from facefleet.agent.store.connection import add_to_counter
from facefleet.agent.store.reports import REPORTS_DROPPED, encode
from facefleet.core.migrations import Legacy, Migration, Migrations, SchemaError, has_table
from facefleet.link.checks import MAX_LABEL_CHARS, MAX_REASON_CHARS
from facefleet.link.events import Decision, Event, EventKind, ExpressionResult
from facefleet.vision.faces import EXPRESSION_LABELS

_LOG = logging.getLogger(__name__)

LEGACY_TABLE = "_sqlite_migrations"
LEGACY_SET = "facefleet-agent-store"
LEGACY_NAMES = ("0001_initial", "0002_sync")
MARKER = "9999_newer_schema_in_facefleet_migrations"
"""The sqlite-utils migration name left for agents that recorded their schema there; ignored here."""

INITIAL = (
    """CREATE TABLE people (
        person_id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        groups_json TEXT NOT NULL DEFAULT '[]',
        metadata_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES people (person_id) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        dim INTEGER NOT NULL CHECK (dim > 0),
        vector BLOB NOT NULL CHECK (typeof(vector) = 'blob' AND length(vector) = 4 * dim),
        quality REAL NOT NULL CHECK (quality BETWEEN 0 AND 1),
        source TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX embeddings_by_model ON embeddings (model_id, person_id)",
    "CREATE INDEX embeddings_by_person ON embeddings (person_id)",
    """CREATE TABLE gallery (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL CHECK (revision >= 0)
    )""",
    "INSERT INTO gallery (id, revision) VALUES (1, 0)",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        door TEXT NOT NULL,
        person_id TEXT,
        decision TEXT NOT NULL,
        score REAL,
        details_json TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX audit_log_by_time ON audit_log (time)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL DEFAULT 0)",
)

SYNC = (
    """CREATE TABLE server_sync (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL DEFAULT 0 CHECK (revision >= 0),
        gallery_id TEXT NOT NULL DEFAULT '',
        models_json TEXT NOT NULL DEFAULT '[]',
        applied_at REAL
    )""",
    "INSERT INTO server_sync (id) VALUES (1)",
    """CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        gallery_revision INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )""",
)

TYPED_REPORTS = (
    "ALTER TABLE reports RENAME TO reports_json",
    """CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        event BLOB NOT NULL CHECK (typeof(event) = 'blob'),
        gallery_revision INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )""",
)


SNAPSHOTS = (
    # The small columns first: sizes are summed without reading the JPEGs' overflow pages.
    """CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE REFERENCES reports (event_id) ON DELETE CASCADE,
        size INTEGER NOT NULL CHECK (size > 0),
        created_at REAL NOT NULL,
        model_id TEXT NOT NULL,
        quality REAL NOT NULL CHECK (quality BETWEEN 0 AND 1),
        source TEXT NOT NULL DEFAULT '',
        vector BLOB NOT NULL CHECK (typeof(vector) = 'blob' AND length(vector) > 0),
        crop_jpeg BLOB NOT NULL CHECK (typeof(crop_jpeg) = 'blob' AND length(crop_jpeg) > 0),
        context_jpeg BLOB NOT NULL CHECK (typeof(context_jpeg) = 'blob')
    )""",
    "CREATE INDEX snapshots_by_time ON snapshots (created_at)",
)

SERVER_THRESHOLDS = (
    # The cosine at which the server groups unknown faces, as its last Register said (NULL: not said).
    "ALTER TABLE server_sync ADD COLUMN cluster_threshold REAL CHECK (cluster_threshold BETWEEN -1 AND 1)",
)

RETAINED_TOPICS = (
    # Full topics, the discovery and topic prefixes included: a prefix changed in the config is cleared too.
    "CREATE TABLE mqtt_retained (topic TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID",
)


def _convert_json_reports(conn: sqlite3.Connection) -> None:
    """Migration 3: every report queued as JSON text moves to the new table as the same Event in protobuf,
    keeping its id, revision and time (and the id sequence, so ids keep growing); one that cannot be
    converted is dropped, counted in REPORTS_DROPPED and logged."""
    rows = conn.execute(
        "SELECT id, event_id, payload, gallery_revision, created_at FROM reports_json ORDER BY id"
    ).fetchall()
    dropped = 0
    for report_id, event_id, text, revision, created_at in rows:
        # Rows written by earlier versions, unchecked: any missing or malformed field means the row cannot be
        # converted, and that is all these exceptions can mean here (LinkError is a ValueError).
        try:
            event = event_from_json(json.loads(text), revision)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            _LOG.warning("queued report %s cannot be converted (%s): dropped", event_id, exc)
            dropped += 1
            continue
        conn.execute(
            "INSERT INTO reports (id, event_id, event, gallery_revision, created_at) VALUES (?, ?, ?, ?, ?)",
            (report_id, event.event_id, encode(event), revision, created_at),
        )
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'reports'")
    conn.execute("UPDATE sqlite_sequence SET name = 'reports' WHERE name = 'reports_json'")
    conn.execute("DROP TABLE reports_json")
    if dropped:
        add_to_counter(conn, REPORTS_DROPPED, dropped)


def event_from_json(payload: Mapping[str, Any], gallery_revision: int) -> Event:
    """A face or access event as it was queued in JSON (the payloads of facefleet.agent.publish.events
    before reports were typed), as the link Event the server was sent for it. gallery_revision: the server
    revision queued with it. KeyError, TypeError or ValueError (LinkError) when a field is missing or
    malformed."""
    kind: EventKind = payload["kind"]
    decision: Decision
    door, margin, expression = "", 0.0, None
    if kind == "face":
        identity = payload["identity"]
        decision, person_id = identity["status"], identity.get("person_id") or ""
        reason = f"track {payload.get('event', 'event')} after {int(payload.get('frames') or 0)} frames"
        expression = _expression(payload.get("expression") or {})
    elif kind == "access":
        decision, person_id, door = payload["decision"], payload.get("person_id") or "", payload["door"]
        margin, mode = _number(payload.get("margin")), str(payload.get("mode") or "")
        reason = str(payload.get("reason") or "")
        reason = f"{reason} ({mode})" if reason and mode else reason or mode
    else:
        raise ValueError(f"kind {kind!r} is neither 'face' nor 'access'")
    return Event(
        event_id=payload["event_id"],
        device_id=payload["device_id"],
        time=_utc(payload["time"]),
        kind=kind,
        decision=decision,
        camera=str(payload.get("camera") or "")[:MAX_LABEL_CHARS],
        person_id=person_id,
        score=_number(payload.get("score")),
        margin=margin,
        expression=expression,
        quality=_number(payload.get("quality")),
        model_versions={str(k): str(v) for k, v in (payload.get("models") or {}).items()},
        gallery_revision=max(0, int(gallery_revision)),
        door=door[:MAX_LABEL_CHARS],
        reason=reason[:MAX_REASON_CHARS],
    )


def _utc(text: str) -> datetime:
    """An ISO 8601 time as published ('2025-01-31T12:00:00.123Z'); one without a zone is UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _number(value: Any) -> float:
    """A finite float; None (not computed) is 0."""
    number = 0.0 if value is None else float(value)
    if not math.isfinite(number):
        raise ValueError(f"a score, margin or quality is {number}")
    return number


def _expression(expression: Mapping[str, Any]) -> ExpressionResult | None:
    """The expression if its label is one of the model's, probabilities clipped to 0–1."""
    label = expression.get("label")
    if label not in EXPRESSION_LABELS:
        return None
    probabilities = expression.get("probabilities") or {}
    return ExpressionResult(
        label, {k: min(1.0, max(0.0, _number(v))) for k, v in probabilities.items() if k in EXPRESSION_LABELS}
    )


def _legacy_version(conn: sqlite3.Connection) -> int | None:
    """How many of the sqlite-utils migrations a store had applied (None: it has no such record)."""
    if not has_table(conn, LEGACY_TABLE):
        return None
    query = f"SELECT name FROM {LEGACY_TABLE} WHERE migration_set = ? AND name <> ? ORDER BY rowid"  # noqa: S608
    names = tuple(row[0] for row in conn.execute(query, (LEGACY_SET, MARKER)))
    if sorted(names) != list(LEGACY_NAMES[: len(names)]):
        raise SchemaError(f"its sqlite-utils migrations {', '.join(names)} are not ones this agent knows")
    return len(names) or None


def _supersede_legacy(conn: sqlite3.Connection) -> None:
    """Our sqlite-utils rows give way to MARKER (the table as sqlite-utils makes it, if missing)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {LEGACY_TABLE} "
        "(id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, applied_at TEXT)"
    )
    conn.execute(
        f"CREATE UNIQUE INDEX IF NOT EXISTS idx_{LEGACY_TABLE}_migration_set_name "
        f"ON {LEGACY_TABLE} (migration_set, name)"
    )
    conn.execute(f"DELETE FROM {LEGACY_TABLE} WHERE migration_set = ?", (LEGACY_SET,))  # noqa: S608
    conn.execute(
        f"INSERT INTO {LEGACY_TABLE} (migration_set, name, applied_at) VALUES (?, ?, datetime('now'))",  # noqa: S608
        (LEGACY_SET, MARKER),
    )


def _legacy_superseded(conn: sqlite3.Connection) -> bool:
    if not has_table(conn, LEGACY_TABLE):
        return False
    query = f"SELECT 1 FROM {LEGACY_TABLE} WHERE migration_set = ? AND name = ?"  # noqa: S608
    return conn.execute(query, (LEGACY_SET, MARKER)).fetchone() is not None


MIGRATIONS = Migrations(
    (
        Migration(1, "initial", INITIAL),
        Migration(2, "sync", SYNC),
        Migration(3, "typed_reports", TYPED_REPORTS, _convert_json_reports),
        Migration(4, "snapshots", SNAPSHOTS),
        Migration(5, "server_thresholds", SERVER_THRESHOLDS),
        Migration(6, "retained_topics", RETAINED_TOPICS),
    ),
    what="store",
    program="agent",
    fix="upgrade facefleet",
    upgrade=(
        "restart the agent service (systemctl restart facefleet-agent), which upgrades it at start, or stop "
        "it and run `facefleet-agent store migrate`"
    ),
    legacy=Legacy(_legacy_version, _supersede_legacy, _legacy_superseded),
)
"""The agent store's migrations, applied by facefleet.agent.store.connection when a store opens (by the
service and `store migrate`; other commands only create a new store)."""
