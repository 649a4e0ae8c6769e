"""The admin audit log as the operator APIs use it: append the outcome of a change, read a page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from facefleet.link.checks import utc_now
from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter, AuditPage
from facefleet.server.errors import ServerError
from facefleet.server.state.interface import State

log = logging.getLogger(__name__)


class AuditLog:
    """The admin audit log as the servicers use it: append an entry, read a page."""

    def __init__(self, state: State, clock: Callable[[], datetime] = utc_now) -> None:
        self.state = state
        self.clock = clock

    async def record(self, who: str, action: str, target: str, error: BaseException | None) -> None:
        """Append the outcome of a change; a log that cannot be written is logged, and the call still
        answers what the change did."""
        try:
            entry = AuditEntry.of(self.clock(), who, action, target, error)
            await asyncio.to_thread(self.state.add_audit, entry)
        except ServerError as exc:  # e.g. a full disk: the state names it, no traceback needed
            log.warning("cannot record %s %s by %s in the admin audit log: %s", action, target, who, exc)
        except Exception:
            log.exception("cannot record %s %s by %s in the admin audit log", action, target, who)

    async def page(self, flt: AuditFilter, cursor: AuditCursor | None, size: int) -> AuditPage:
        return await asyncio.to_thread(self.state.list_audit, flt, cursor, size)
