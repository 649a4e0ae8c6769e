"""/api/session: the web console's sign-in and sign-out. Signing in with an operator token sets the session
cookie (HttpOnly, Secure, SameSite=Strict: scripts cannot read it and other sites cannot send it) and
answers the session's CSRF token, which the console sends back on every change. The token itself never
reaches the browser again. Sign-ins and sign-outs are in the admin audit log ("console.sign-in")."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from facefleet.server.api.http.auth import (
    SESSION_COOKIE,
    Handlers,
    check_csrf,
    console_session,
    sessions,
)
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.api.security import MAX_TOKEN_CHARS, Operator
from facefleet.server.console.sessions import ConsoleSession, SessionsFullError, SignInsTooFrequentError
from facefleet.server.errors import UnauthenticatedError

router = APIRouter(
    prefix="/session", tags=["web console"], route_class=ProblemRoute, responses=ERROR_RESPONSES
)


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="An operator token")


class SessionOut(BaseModel):
    operator: str = Field(description="The token's name")
    role: str = Field(description="admin or query")
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every change made with this session")
    expires_at: datetime = Field(description="When the session ends at the latest (it ends sooner when idle)")


def _session_out(operator: Operator, session: ConsoleSession) -> SessionOut:
    return SessionOut(
        operator=operator.name,
        role=operator.role,
        csrf_token=session.csrf_token,
        expires_at=datetime.fromtimestamp(session.expires, timezone.utc),
    )


def _signed_in(request: Request, handlers: Handlers) -> tuple[str, ConsoleSession, Operator]:
    found = console_session(request)
    if found is None:
        raise UnauthenticatedError("not signed in, or the session ended; sign in with an operator token")
    session_id, session = found
    try:
        operator = handlers.auth.operator((("authorization", f"Bearer {session.token}"),), "query")
    except UnauthenticatedError:
        sessions(request).end(session_id)
        raise UnauthenticatedError("the session's token was revoked; sign in with a valid token") from None
    return session_id, session, operator


SignedIn = Annotated[tuple[str, ConsoleSession, Operator], Depends(_signed_in)]


@router.post("", summary="Sign in to the web console with an operator token", response_model=SessionOut)
async def sign_in(body: SignIn, request: Request, response: Response, handlers: Handlers) -> SessionOut:
    token = body.token.strip()
    try:
        operator = handlers.auth.operator((("authorization", f"Bearer {token}"),), "query")
    except UnauthenticatedError:
        raise UnauthenticatedError(
            "unknown or revoked token; create one with "
            "`facefleet-server tokens create NAME --role admin|query`"
        ) from None
    store = sessions(request)
    try:
        session_id, session = store.start(token)
    except SignInsTooFrequentError as exc:
        retry_after = str(math.ceil(exc.retry_after_s))
        raise HTTPException(429, str(exc), headers={"Retry-After": retry_after}) from None
    except SessionsFullError as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "60"}) from None
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(store.max_age_s),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    await handlers.audit.record(operator.name, "console.sign-in", operator.role, None)
    return _session_out(operator, session)


@router.get("", summary="The signed-in operator and the session's CSRF token", response_model=SessionOut)
async def current(signed_in: SignedIn) -> SessionOut:
    _, session, operator = signed_in
    return _session_out(operator, session)


@router.delete("", summary="Sign out", status_code=204, response_class=Response)
async def sign_out(request: Request, signed_in: SignedIn, handlers: Handlers) -> Response:
    session_id, session, operator = signed_in
    check_csrf(request, session)
    sessions(request).end(session_id)
    await handlers.audit.record(operator.name, "console.sign-out", "", None)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
