"""Change notifications from PostgreSQL (LISTEN on facefleet.server.state.postgres.schema.CHANNEL), so a
change committed through any replica reaches this replica's Watch streams and token cache at once, without
polling the database.

`follow` holds one connection of its own in LISTEN. When it breaks (the database restarts, the network
fails), it reconnects with a growing pause and reports a 'reconnected' change first: notifications sent
while it was away are lost, so the caller looks at everything once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

from facefleet.server.state.postgres.schema import CHANNEL
from facefleet.server.state.postgres.state import redact

log = logging.getLogger(__name__)

RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Pauses before the 1st, 2nd, … reconnection attempt (the last one repeats)."""
RECONNECTED = "reconnected"


async def follow(
    url: str, on_change: Callable[[str], Awaitable[None]], *, ready: asyncio.Event | None = None
) -> None:
    """Call on_change(payload) for every notification ('gallery', 'models', 'devices', 'tokens'), and
    on_change('reconnected') after a broken connection is back; runs until cancelled. `ready` is set once
    the first LISTEN is in place."""
    failures = 0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                if ready is not None:
                    ready.set()
                if failures:
                    log.info("state database %s: listening for changes again", redact(url))
                    await on_change(RECONNECTED)
                failures = 0
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
