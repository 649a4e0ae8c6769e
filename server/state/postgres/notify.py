"""Change notifications from PostgreSQL (LISTEN on facefleet.server.state.postgres.schema.CHANNEL), so a
change committed through any replica reaches this replica's Watch streams and token cache at once, without
polling the database.

`follow` holds one connection of its own in LISTEN, with TCP keepalives so that a peer gone silent (a
network partition, a database host that died) breaks it within about half a minute instead of the
kernel's two hours. When it breaks, it reconnects with a growing pause. Each time a LISTEN is in place, the
first included, it reports a 'listening' change: what was committed before (while the replica started, or
while it was away) sent notifications nobody heard, so the caller looks at everything once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from facefleet.server.state.postgres.schema import CHANNEL
from facefleet.server.state.postgres.state import redact

log = logging.getLogger(__name__)

RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Pauses before the 1st, 2nd, … reconnection attempt (the last one repeats)."""
LISTENING = "listening"
"""The change reported once a LISTEN is in place: anything may have changed before."""
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq's TCP settings of the listening connection and the serving lock's (idle and interval in seconds,
user timeout in ms): a silent peer is given up after 10 + 3 × 5 = 25 s, and data it does not acknowledge
(a query sent on a half-open connection) after 30 s. A URL that sets any of them keeps its own value."""


async def listen_connection(url: str) -> psycopg.AsyncConnection[Any]:
    """A new autocommit connection for LISTEN, with KEEPALIVES where the URL does not set them."""
    given = conninfo_to_dict(url)
    keepalives = {key: value for key, value in KEEPALIVES.items() if key not in given}
    return await psycopg.AsyncConnection.connect(make_conninfo(url, **keepalives), autocommit=True)


async def follow(
    url: str, on_change: Callable[[str], Awaitable[None]], *, ready: asyncio.Event | None = None
) -> None:
    """Call on_change('listening') each time a LISTEN is in place (the first included), then
    on_change(payload) for every notification ('gallery', 'models', 'devices', 'tokens'); runs until
    cancelled. `ready` is set once the first LISTEN is in place."""
    failures = 0
    while True:
        try:
            async with await listen_connection(url) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                if ready is not None:
                    ready.set()
                if failures:
                    log.info("state database %s: listening for changes again", redact(url))
                failures = 0
                await on_change(LISTENING)
                async for notice in conn.notifies():
                    await on_change(notice.payload)
        except asyncio.CancelledError:
            raise
        except (psycopg.Error, OSError) as exc:
            if not failures:
                log.warning("state database %s: notifications lost (%s); reconnecting", redact(url), exc)
            pause = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
            failures += 1
            await asyncio.sleep(pause)
