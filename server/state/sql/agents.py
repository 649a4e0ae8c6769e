"""Row-level SQL of the agents and operator tokens tables for facefleet.server.state.sqlite.state.SqliteState:
plain
functions on a connection, run inside its transactions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from facefleet.link.fleet import Registration
from facefleet.server.domain.queries import from_us, to_us
from facefleet.server.domain.records import AgentInfo, TokenRecord
from facefleet.server.errors import AlreadyExistsError, NotFoundError
from facefleet.server.state.sql.meta import Connection

_COLUMNS = "token_id, name, role, salt, digest, created_us"
"""Of the tokens table, in the order _token reads them."""


def register_agent(conn: Connection, r: Registration, now: datetime) -> AgentInfo:
    """Insert or update an agent; registered_at is kept on re-registration."""
    conn.execute(
        "INSERT INTO agents (device_id, agent_version, hostname, model_versions_json, "
        "model_precisions_json, capabilities_json, gallery_revision, registered_us, last_seen_us, "
        "health_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}') "
        "ON CONFLICT (device_id) DO UPDATE SET agent_version = excluded.agent_version, "
        "hostname = excluded.hostname, model_versions_json = excluded.model_versions_json, "
        "model_precisions_json = excluded.model_precisions_json, "
        "capabilities_json = excluded.capabilities_json, "
        "gallery_revision = excluded.gallery_revision, last_seen_us = excluded.last_seen_us",
        (
            r.device_id,
            r.agent_version,
            r.hostname,
            json.dumps(dict(r.model_versions), sort_keys=True),
            json.dumps(dict(r.model_precisions), sort_keys=True),
            json.dumps(list(r.capabilities)),
            r.gallery_revision,
            to_us(now),
            to_us(now),
        ),
    )
    return load_agents(conn, (r.device_id,))[0]


def touch_agent(
    conn: Connection,
    device_id: str,
    now: datetime,
    gallery_revision: int | None,
    health: Mapping[str, float] | None,
) -> None:
    conn.execute(
        "UPDATE agents SET last_seen_us = CASE WHEN last_seen_us > ? THEN last_seen_us ELSE ? END, "
        "gallery_revision = COALESCE(?, gallery_revision), health_json = COALESCE(?, health_json) "
        "WHERE device_id = ?",
        (
            to_us(now),
            to_us(now),
            gallery_revision,
            json.dumps(dict(health), sort_keys=True) if health else None,
            device_id,
        ),
    )


def load_agents(conn: Connection, device_ids: Sequence[str] | None) -> list[AgentInfo]:
    columns = (
        "device_id, agent_version, hostname, model_versions_json, capabilities_json, gallery_revision, "
        "registered_us, last_seen_us, health_json, model_precisions_json"
    )
    if device_ids is None:
        rows = conn.execute(f"SELECT {columns} FROM agents ORDER BY device_id").fetchall()  # noqa: S608
    else:
        marks = ", ".join("?" * len(device_ids))
        rows = conn.execute(
            f"SELECT {columns} FROM agents WHERE device_id IN ({marks}) ORDER BY device_id",  # noqa: S608
            list(device_ids),
        ).fetchall()
    return [
        AgentInfo(
            device_id=row[0],
            agent_version=row[1],
            hostname=row[2],
            model_versions=json.loads(row[3]),
            capabilities=tuple(json.loads(row[4])),
            gallery_revision=int(row[5]),
            registered_at=from_us(row[6]),
            last_seen=from_us(row[7]),
            health=json.loads(row[8]),
            model_precisions=json.loads(row[9]),
        )
        for row in rows
    ]


def add_token(conn: Connection, record: TokenRecord) -> None:
    if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (record.name,)).fetchone():
        raise AlreadyExistsError(
            f"a token named {record.name!r} exists; revoke it first or pick another name"
        )
    conn.execute(
        f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
        (record.token_id, record.name, record.role, record.salt, record.digest, to_us(record.created_at)),
    )


def find_token(conn: Connection, token_id: str) -> TokenRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tokens WHERE token_id = ?",  # noqa: S608
        (token_id,),
    ).fetchone()
    return _token(row) if row else None


def list_tokens(conn: Connection) -> list[TokenRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY name").fetchall()  # noqa: S608
    return [_token(row) for row in rows]


def revoke_token(conn: Connection, name: str) -> None:
    if conn.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
        raise NotFoundError(f"no token named {name!r}; `facefleet-server tokens list` shows them")


def _token(row: tuple[object, ...]) -> TokenRecord:
    token_id, name, role, salt, digest, created_us = row
    assert role in ("admin", "query")
    return TokenRecord(
        token_id=str(token_id),
        name=str(name),
        role=role,
        salt=bytes(salt),  # type: ignore[call-overload]
        digest=bytes(digest),  # type: ignore[call-overload]
        created_at=from_us(int(str(created_us))),
    )
