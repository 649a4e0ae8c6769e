"""/api/audit: the admin audit log, newest first, a page at a time — every change to people, tokens, models,
rollouts, devices and unknown faces (through either API or the server's command line), with who made it,
when and the outcome; refused changes too. Needs an admin token."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from facefleet.server.api.http.auth import AdminOperator, Handlers
from facefleet.server.api.http.params import InRange
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.domain import queries
from facefleet.server.domain.audit import AuditCursor, AuditEntry, AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"], route_class=ProblemRoute, responses=ERROR_RESPONSES)


class AuditEntryOut(BaseModel):
    time: datetime
    who: str = Field(description="The token's name; 'local' for the command line; 'server' for the server")
    action: str = Field(description="e.g. people.enrol, rollouts.pause, devices.revoke")
    target: str
    outcome: str = Field(description="'ok', or the gRPC status name of the refusal, e.g. INVALID_ARGUMENT")
    detail: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(
            time=e.time, who=e.who, action=e.action, target=e.target, outcome=e.outcome, detail=e.detail
        )


class AuditPage(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first")
    next_page_token: str = Field(description="Empty on the last page")


@router.get("", summary="The admin audit log", response_model=AuditPage)
async def audit_log(
    operator: AdminOperator,
    handlers: Handlers,
    since: Annotated[
        datetime | None, Query(description="At or after (default: the first entry)"), InRange
    ] = None,
    until: Annotated[datetime | None, Query(description="Before (default: now)"), InRange] = None,
    who: Annotated[str, Query(description="Only entries by this token name, 'local' or 'server'")] = "",
    action_prefix: Annotated[str, Query(description="Only actions that start with this, e.g. people")] = "",
    page_size: Annotated[int, Query(description="1–1000; 0 means 100")] = 0,
    page_token: Annotated[str, Query(description="next_page_token of the previous page")] = "",
) -> AuditPage:
    log = handlers.audit
    flt = AuditFilter(
        since=since or queries.EPOCH,
        until=until or log.clock() + timedelta(microseconds=1),
        who=who,
        action=action_prefix,
    )
    cursor = AuditCursor.decode(page_token) if page_token else None
    page = await log.page(flt, cursor, queries.page_size(page_size))
    return AuditPage(
        entries=[AuditEntryOut.of(e) for e in page.entries],
        next_page_token=page.next_cursor.encode() if page.next_cursor else "",
    )
