"""Row-level SQL of the admin audit log for facefleet.server.state.sqlite.state.SqliteState: plain functions
on a connection, run inside its transactions."""

from __future__ import annotations

from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter, AuditPage
from facefleet.server.domain.queries import from_us, to_us
from facefleet.server.state.sql import keyset
from facefleet.server.state.sql.meta import Connection


def add_audit(conn: Connection, entry: AuditEntry) -> AuditEntry:
    cursor = conn.execute(
        "INSERT INTO admin_audit (time_us, who, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?) "
        "RETURNING id",
        (to_us(entry.time), entry.who, entry.action, entry.target, entry.outcome, entry.detail),
    )
    return AuditEntry(
        entry.time,
        entry.who,
        entry.action,
        entry.target,
        entry.outcome,
        entry.detail,
        int(cursor.fetchone()[0]),
    )


def list_audit(conn: Connection, flt: AuditFilter, after: AuditCursor | None, limit: int) -> AuditPage:
    """Matching entries newest first (ties by id, descending), after the cursor, at most limit."""
    # the cursor as a row value: an index bound at any depth (keyset)
    upper, bound = keyset.before(to_us(flt.until), (after.time_us, after.entry_id) if after else None, "id")
    where = ["time_us >= ?", upper]
    params: list[object] = [to_us(flt.since), *bound]
    if flt.who:
        where.append("who = ?")
        params.append(flt.who)
    if flt.action:
        where.append("substr(action, 1, ?) = ?")
        params += [len(flt.action), flt.action]
    rows = conn.execute(
        "SELECT id, time_us, who, action, target, outcome, detail FROM admin_audit "  # noqa: S608
        f"WHERE {' AND '.join(where)} ORDER BY time_us DESC, id DESC LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    entries = tuple(
        AuditEntry(from_us(time_us), who, action, target, outcome, detail, entry_id)
        for entry_id, time_us, who, action, target, outcome, detail in rows[:limit]
    )
    more = len(rows) > limit and entries
    return AuditPage(entries, AuditCursor(to_us(entries[-1].time), entries[-1].entry_id) if more else None)


def expire_audit(conn: Connection, before_us: int) -> int:
    """Delete the entries before `before_us` (retention); how many."""
    return max(0, int(conn.execute("DELETE FROM admin_audit WHERE time_us < ?", (before_us,)).rowcount))
