"""The SQLite schema of the server state: numbered migrations (facefleet.core.migrations) applied when the
database opens. Append, never edit one that has shipped. Tables are described where their SQL lives
(facefleet.server.state.sql); PostgreSQL has its own schema (facefleet.server.state.postgres.schema)."""

from __future__ import annotations

import sqlite3

from facefleet.core.migrations import Legacy, Migration, Migrations, SchemaError, has_table
from facefleet.server.state.sql import attribute_cells
from facefleet.server.state.sql.events import ATTRIBUTE_ROLLUPS, ROLLUPS

EVENTS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, device_id TEXT NOT NULL,
        time_us INTEGER NOT NULL, kind TEXT NOT NULL, decision TEXT NOT NULL, camera TEXT NOT NULL,
        person_id TEXT NOT NULL, score REAL NOT NULL, margin REAL NOT NULL, expression TEXT NOT NULL,
        expression_json TEXT NOT NULL, quality REAL NOT NULL, model_versions_json TEXT NOT NULL,
        gallery_revision INTEGER NOT NULL, door TEXT NOT NULL, reason TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_time ON events(time_us, event_id)",
    "CREATE INDEX IF NOT EXISTS events_device_time ON events(device_id, time_us)",
    "CREATE INDEX IF NOT EXISTS events_person_time ON events(person_id, time_us)",
    *(
        f"""CREATE TABLE IF NOT EXISTS {table} (
            bucket_us INTEGER NOT NULL, device_id TEXT NOT NULL, kind TEXT NOT NULL, decision TEXT NOT NULL,
            expression TEXT NOT NULL, door TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (bucket_us, device_id, kind, decision, expression, door)) WITHOUT ROWID"""
        for _, table in ROLLUPS
    ),
)

EVENTS_SCHEMA_8 = (
    "CREATE INDEX IF NOT EXISTS events_camera_time ON events(camera, time_us)",
    "CREATE INDEX IF NOT EXISTS events_door_time ON events(door, time_us)",
)
"""Migration 8: filters by camera or door. Only access events name a door, and a camera filter reads raw
events even in aggregates, so without these both walk every event of the time range."""

ATTRIBUTE_COLUMNS = (
    ("gender", "TEXT NOT NULL DEFAULT ''"),
    ("male_probability", "REAL"),
    ("age_years", "REAL"),
    ("age_band", "TEXT NOT NULL DEFAULT ''"),
)
"""Migration 9's columns of `events`: an event's estimated attributes as the agent reported them; '' and NULL
for an event without (every event stored before)."""

EVENTS_SCHEMA_9 = tuple(
    f"""CREATE TABLE IF NOT EXISTS {table} (
        bucket_us INTEGER NOT NULL, device_id TEXT NOT NULL, kind TEXT NOT NULL, decision TEXT NOT NULL,
        door TEXT NOT NULL, gender TEXT NOT NULL, age_band TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (bucket_us, device_id, kind, decision, door, gender, age_band)) WITHOUT ROWID"""
    for table in attribute_cells.LONG_TABLES
)
"""Migration 9: the attribute rollups. Events stored before carry no attributes, so they start empty and
the main rollups keep their rows and counts as they are."""

ATTRIBUTE_CELLS_SCHEMA = (
    *(
        f"CREATE TABLE IF NOT EXISTS {table} ({attribute_cells.table_body('INTEGER')}) WITHOUT ROWID"
        for _, table in ATTRIBUTE_ROLLUPS
    ),
    *(
        attribute_cells.convert_long_rollup(long, wide)
        for long, (_, wide) in zip(attribute_cells.LONG_TABLES, ATTRIBUTE_ROLLUPS, strict=True)
    ),
    *(f"DROP TABLE IF EXISTS {table}" for table in attribute_cells.LONG_TABLES),
)
"""Migration 10: the attribute rollups in wide rows, a count column per gender × age band (attribute_cells),
their counts kept."""


def add_attribute_columns(conn: sqlite3.Connection) -> None:
    """Migration 9's columns, those `events` lacks (ADD COLUMN only changes the schema: instant however many
    events there are)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    for name, definition in ATTRIBUTE_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE events ADD COLUMN {name} {definition}")


MODELS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS models (
        model_id TEXT PRIMARY KEY, task TEXT NOT NULL, precision TEXT NOT NULL, licence TEXT NOT NULL,
        files_json TEXT NOT NULL, manifest_json TEXT NOT NULL, published_us INTEGER NOT NULL,
        retired_us INTEGER)""",
    """CREATE TABLE IF NOT EXISTS rollouts (
        rollout_id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT NOT NULL,
        model_id TEXT NOT NULL REFERENCES models(model_id),
        target_kind TEXT NOT NULL CHECK (target_kind IN ('all', 'group', 'percent')),
        target_group TEXT NOT NULL, target_percent INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('preparing', 'active', 'paused', 'rolled_back')),
        created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rollouts_model ON rollouts(model_id)",
    """CREATE TABLE IF NOT EXISTS rollout_devices (
        rollout_id INTEGER NOT NULL REFERENCES rollouts(rollout_id) ON DELETE CASCADE,
        device_id TEXT NOT NULL, previous_model_id TEXT NOT NULL, state TEXT NOT NULL,
        reason TEXT NOT NULL, updated_us INTEGER NOT NULL, PRIMARY KEY (rollout_id, device_id))""",
    "CREATE INDEX IF NOT EXISTS rollout_devices_device ON rollout_devices(device_id)",
    """CREATE TABLE IF NOT EXISTS agent_groups (
        device_id TEXT NOT NULL, group_name TEXT NOT NULL, PRIMARY KEY (device_id, group_name))""",
    """CREATE TABLE IF NOT EXISTS agent_model_statuses (
        device_id TEXT NOT NULL, task TEXT NOT NULL, model_id TEXT NOT NULL, rollout_id INTEGER NOT NULL,
        state TEXT NOT NULL, reason TEXT NOT NULL, time_us INTEGER NOT NULL,
        PRIMARY KEY (device_id, task))""",
)
"""Migration 2: model versions and rollouts."""

MODELS_SCHEMA_3 = ("ALTER TABLE rollouts ADD COLUMN reason TEXT NOT NULL DEFAULT ''",)
"""Migration 3: why a rollout was rolled back when no operator did it (its preparation stopped)."""

MODELS_SCHEMA_4 = (
    "ALTER TABLE rollouts ADD COLUMN max_failures_count INTEGER CHECK (max_failures_count >= 0)",
    "ALTER TABLE rollouts ADD COLUMN max_failures_percent INTEGER "
    "CHECK (max_failures_percent BETWEEN 0 AND 100)",
    "ALTER TABLE rollouts ADD COLUMN on_failures TEXT NOT NULL DEFAULT 'pause' "
    "CHECK (on_failures IN ('pause', 'rollback'))",
)
"""Migration 4: a rollout's failure budget (NULL count and percent: none) and what to do past it."""

AUDIT_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS admin_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time_us INTEGER NOT NULL, who TEXT NOT NULL,
        action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS admin_audit_time ON admin_audit(time_us, id)",
)
"""Migration 5: the admin audit log, listed newest first by time."""

DEVICES_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS devices (
        device_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT NOT NULL, changed_us INTEGER,
        changed_by TEXT NOT NULL, wipe INTEGER NOT NULL, wipe_sent_us INTEGER)""",
    """CREATE TABLE IF NOT EXISTS device_certificates (
        serial TEXT PRIMARY KEY, device_id TEXT NOT NULL, not_before_us INTEGER NOT NULL,
        not_after_us INTEGER NOT NULL, issued_us INTEGER NOT NULL, revoked_us INTEGER,
        revoked_reason TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS device_certificates_device ON device_certificates(device_id, issued_us)",
)
"""Migration 6: device status and the client certificates issued to each device."""

SNAPSHOTS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS snapshots (
        event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, camera TEXT NOT NULL, time_us INTEGER NOT NULL,
        decision TEXT NOT NULL, person_id TEXT NOT NULL, quality REAL NOT NULL, model_id TEXT NOT NULL,
        vector BLOB NOT NULL, crop_jpeg BLOB NOT NULL, context_jpeg BLOB NOT NULL, status TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS snapshots_time ON snapshots(time_us, event_id)",
    "CREATE INDEX IF NOT EXISTS snapshots_review ON snapshots(status, decision, time_us)",
)
"""Migration 7: face snapshots, reviewed newest first."""


INITIAL = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS people (
        person_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, groups_json TEXT NOT NULL,
        metadata_json TEXT NOT NULL, created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
        revision INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS person_groups (
        group_name TEXT NOT NULL,
        person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        PRIMARY KEY (group_name, person_id))""",
    "CREATE INDEX IF NOT EXISTS person_groups_person ON person_groups(person_id)",
    """CREATE TABLE IF NOT EXISTS embeddings (
        id INTEGER PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        model_id TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
        quality REAL NOT NULL, source TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS embeddings_person ON embeddings(person_id, id)",
    """CREATE TABLE IF NOT EXISTS crops (
        id INTEGER PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES people(person_id) ON DELETE CASCADE,
        image_format TEXT NOT NULL, source TEXT NOT NULL, data BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS crops_person ON crops(person_id, id)",
    """CREATE TABLE IF NOT EXISTS gallery_changes (
        revision INTEGER NOT NULL, person_id TEXT NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')), committed_us INTEGER NOT NULL,
        PRIMARY KEY (revision, person_id))""",
    """CREATE TABLE IF NOT EXISTS agents (
        device_id TEXT PRIMARY KEY, agent_version TEXT NOT NULL, hostname TEXT NOT NULL,
        model_versions_json TEXT NOT NULL, capabilities_json TEXT NOT NULL,
        gallery_revision INTEGER NOT NULL, registered_us INTEGER NOT NULL,
        last_seen_us INTEGER NOT NULL, health_json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        token_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
        salt BLOB NOT NULL, digest BLOB NOT NULL, created_us INTEGER NOT NULL)""",
    *EVENTS_SCHEMA,
)
"""Migration 1: people, crops, the gallery change log, agents, tokens and events."""

AGENT_PRECISIONS_SCHEMA = ("ALTER TABLE agents ADD COLUMN model_precisions_json TEXT NOT NULL DEFAULT '{}'",)
"""Migration 11: what each agent's models run at, by task (an agent registered before it: unknown, {})."""


MARKER = "999999"
"""meta.schema_version of every database this runner migrates or creates: servers that recorded their schema
there (before the runner) read it as a newer server's database and refuse it saying so, instead of applying
their migrations again over the current schema. Ignored here."""


def _legacy_version(conn: sqlite3.Connection) -> int | None:
    """The schema version recorded in the meta table before the migration runner (None: none there, or
    the marker)."""
    if not has_table(conn, "meta"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] == MARKER:
        return None
    if not str(row[0]).isdigit():
        raise SchemaError(f"its meta schema_version {row[0]!r} is not a version number")
    return int(row[0])


def _supersede_legacy(conn: sqlite3.Connection) -> None:
    conn.execute(INITIAL[0])  # the meta table, when the database is new
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (MARKER,))


def _legacy_superseded(conn: sqlite3.Connection) -> bool:
    if not has_table(conn, "meta"):
        return False
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return row is not None and row[0] == MARKER


MIGRATIONS = Migrations(
    (
        Migration(1, "initial", INITIAL),
        Migration(2, "models", MODELS_SCHEMA),
        Migration(3, "rollout_reason", MODELS_SCHEMA_3),
        Migration(4, "rollout_failure_budget", MODELS_SCHEMA_4),
        Migration(5, "admin_audit", AUDIT_SCHEMA),
        Migration(6, "devices", DEVICES_SCHEMA),
        Migration(7, "snapshots", SNAPSHOTS_SCHEMA),
        Migration(8, "event_camera_door_indexes", EVENTS_SCHEMA_8),
        Migration(9, "event_attributes", EVENTS_SCHEMA_9, add_attribute_columns),
        Migration(10, "attribute_cells", ATTRIBUTE_CELLS_SCHEMA),
        Migration(11, "agent_precisions", AGENT_PRECISIONS_SCHEMA),
    ),
    what="state database",
    program="server",
    fix="upgrade facefleet-server",
    upgrade=(
        "restart the server (systemctl restart facefleet-server), which upgrades it at start; to take a "
        "backup first, `facefleet-server backup DEST` works on it as it is"
    ),
    legacy=Legacy(_legacy_version, _supersede_legacy, _legacy_superseded),
)
"""The server database's migrations (facefleet.core.migrations): append, never edit one that has shipped."""
