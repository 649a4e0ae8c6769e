"""Whether server replicas serve a PostgreSQL state database (facefleet.server.state.serving): each replica
holds SERVE_LOCK, an advisory lock, shared on a connection of its own for as long as it serves; a restore
(facefleet.server.state.postgres.backup) takes it exclusively for its whole run, so it is refused while any
replica, on any host, serves the database, and no replica starts while it runs.

An advisory lock lives as long as its connection: when that breaks (the database restarted, the network
failed) the replica takes the lock again on a new one at its next look for changes (renew), and stops serving
when a restore took it meanwhile. So that a restore does not start in that gap, it is also refused while a
server's other connections (application_name APPLICATION_NAME) are open on the database."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from facefleet.server.errors import FailedPreconditionError, StateError
from facefleet.server.state.postgres.notify import KEEPALIVES
from facefleet.server.state.postgres.state import APPLICATION_NAME, redact
from facefleet.server.state.serving import STOP_SERVER, RestoreRunningError, servers_running

log = logging.getLogger(__name__)

SERVE_LOCK = 0x46465333
"""Advisory lock key held shared by every serving replica and exclusively by a restore ('FFS3')."""
CONNECT_TIMEOUT_S = 10
CLOSING_S = 1.0
"""How long a restore waits for servers' connections that are closing (a server that just stopped) to end."""


class PgServingLock:
    """SERVE_LOCK held shared on a connection of its own, from construction until close()."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        # close() waits for a renew() running in a worker thread: libpq must not close a connection under
        # a statement in flight
        self._using = threading.Lock()
        self._closed = False
        self._conn = self._take()

    def _take(self) -> psycopg.Connection[Any]:
        given = conninfo_to_dict(self.url)
        keepalives = {key: value for key, value in KEEPALIVES.items() if key not in given}
        try:
            conn = psycopg.connect(
                make_conninfo(self.url, **keepalives),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            raise StateError(f"state database {self.where}: cannot connect ({_reason(exc)})") from None
        try:
            row = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (SERVE_LOCK,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise StateError(
                f"state database {self.where}: cannot take the serving lock ({_reason(exc)})"
            ) from None
        if not (row and row[0]):
            conn.close()
            raise RestoreRunningError(
                f"state database {self.where} is being restored or upgraded (`facefleet-server restore`, or "
                "another server applying this version's migrations, holds it); start the server once that "
                "has finished"
            )
        return conn

    def renew(self) -> None:
        """Take the lock again on a new connection when the one that held it broke; RestoreRunningError
        when a restore holds it now, StateError while taking it fails otherwise (the next call tries
        again)."""
        with self._using:
            if self._closed:
                return
            try:
                self._conn.execute("SELECT 1")
                return
            except psycopg.Error:
                self._conn.close()
            self._conn = self._take()
        log.info("state database %s: holding the serving lock again", self.where)

    @contextmanager
    def alone(self) -> Iterator[None]:
        """SERVE_LOCK taken exclusively on the same session (which holds it shared: a session's locks do not
        conflict with each other), granted only when no other server holds it."""
        with self._using:
            try:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (SERVE_LOCK,)).fetchone()
                others = 0 if row and row[0] else _serving(self._conn, others=True)
            except psycopg.Error as exc:
                raise StateError(
                    f"state database {self.where}: cannot take the serving lock ({_reason(exc)})"
                ) from None
        if not (row and row[0]):
            if not others:
                raise RestoreRunningError(
                    f"state database {self.where} is being restored (`facefleet-server restore` holds it); "
                    "start the server once the restore has finished"
                )
            plural = "s" if others > 1 else ""
            raise servers_running(self.where, f"{others} other server{plural}")
        try:
            yield
        finally:
            with self._using:
                try:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (SERVE_LOCK,))
                except psycopg.Error:
                    log.warning("state database %s: the exclusive serving lock goes with its connection")

    def close(self) -> None:
        with self._using:
            self._closed = True
            self._conn.close()


def refuse_while_serving(conn: psycopg.Connection[Any], where: str) -> None:
    """Take SERVE_LOCK exclusively for conn's session (until it closes): FailedPreconditionError while any
    replica serves the database (naming how many), even one that lost the lock for a moment (its other
    connections are open), or another restore runs."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SERVE_LOCK,)).fetchone()
    if row and row[0]:
        sessions = _server_sessions(conn)
        if not sessions:
            return
        conn.execute("SELECT pg_advisory_unlock(%s)", (SERVE_LOCK,))
        raise FailedPreconditionError(
            f"{sessions} connection{'s' if sessions > 1 else ''} of a running server or facefleet-server "
            f"command (application_name {APPLICATION_NAME}) {'are' if sessions > 1 else 'is'} open on the "
            f"state database {where}: stop the server first: {STOP_SERVER} (on every replica), let commands "
            "end (a host that went away leaves its sessions until PostgreSQL notices: end them with "
            f"pg_terminate_backend, their pids in pg_stat_activity), then run the restore again"
        )
    replicas = _serving(conn)
    if not replicas:
        raise FailedPreconditionError(f"another restore into {where} is running: wait for it to finish")
    raise FailedPreconditionError(
        f"{replicas} running server{'s' if replicas > 1 else ''} serve{'' if replicas > 1 else 's'} the "
        f"state database {where}: stop the server first: {STOP_SERVER} (on every replica), then run the "
        "restore again"
    )


def _serving(conn: psycopg.Connection[Any], *, others: bool = False) -> int:
    """How many sessions hold SERVE_LOCK shared (others: besides conn's own)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = %s "
        "AND objsubid = 1 AND mode = 'ShareLock' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND (NOT %s OR pid <> pg_backend_pid())",
        (SERVE_LOCK, others),
    ).fetchone()
    return int(row[0]) if row else 0


def _server_sessions(conn: psycopg.Connection[Any]) -> int:
    """How many sessions of servers, other than conn's, are open on conn's database, after waiting up to
    CLOSING_S for them to end."""
    closing_until = time.monotonic() + CLOSING_S
    while True:
        conn.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees the sessions of its start
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND pid <> pg_backend_pid()",
            (APPLICATION_NAME,),
        ).fetchone()
        sessions = int(row[0]) if row else 0
        if not sessions or time.monotonic() >= closing_until:
            return sessions
        time.sleep(0.05)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
