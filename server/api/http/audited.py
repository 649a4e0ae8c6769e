"""Changes made through the HTTP API, recorded in the admin audit log as the gRPC ones are: the same action
names ("people.enrol", "rollouts.pause", "devices.revoke", …), who = the token's name, and the outcome (ok,
or the status the change was refused with). Requests refused before authentication are not recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.security import Operator


@dataclass
class Change:
    """The target of a change (a person id, model id, …), which a route may learn while it runs."""

    target: str = ""


@asynccontextmanager
async def audited(
    handlers: OperatorHandlers, operator: Operator, action: str, target: str = ""
) -> AsyncIterator[Change]:
    """Record the change made inside the block, or its refusal (the exception is raised on)."""
    change = Change(target)
    try:
        yield change
    except Exception as exc:
        await handlers.audit.record(operator.name, action, change.target, exc)
        raise
    await handlers.audit.record(operator.name, action, change.target, None)
