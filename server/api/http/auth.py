"""Who is calling: the operator behind `Authorization: Bearer <token>`, checked by the server's Authenticator
(the tokens and roles of the gRPC API), or behind a web console session cookie (the token it signed in
with, checked again on every request). Reads need the "query" role (an "admin" token has it too); changes,
and reads of people, face images and the admin's lists, need "admin", as in AdminService.

A request that relies on the session cookie and changes anything (any method but GET, HEAD and OPTIONS)
must carry the session's CSRF token in the `X-CSRF-Token` header, and an `Origin`, if it sends one, of this
server; a bearer token needs neither (a browser never adds it on its own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.security import Operator
from facefleet.server.console.sessions import ConsoleSession, ConsoleSessions
from facefleet.server.domain.records import Role
from facefleet.server.errors import PermissionDeniedError, UnauthenticatedError

SESSION_COOKIE = "facefleet_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An operator token: `facefleet-server tokens create NAME --role admin|query`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def handlers(request: Request) -> OperatorHandlers:
    """The server's operator handlers, which the application holds (facefleet.server.api.http.app)."""
    return cast(OperatorHandlers, request.app.state.handlers)


def sessions(request: Request) -> ConsoleSessions:
    """The console's sessions, which the application holds."""
    return cast(ConsoleSessions, request.app.state.sessions)


def console_session(request: Request) -> tuple[str, ConsoleSession] | None:
    """(id, session) of the request's session cookie, if it names a live session."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    session = sessions(request).find(session_id) if session_id else None
    return None if session is None else (session_id, session)


def check_csrf(request: Request, session: ConsoleSession) -> None:
    """Refuse a change sent with a session cookie but without its CSRF token, or from another origin."""
    if request.method in SAFE_METHODS:
        return
    if not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise PermissionDeniedError(
            f"this change needs the session's CSRF token in the {CSRF_HEADER} header (the web console sends "
            "it; other clients use 'Authorization: Bearer <token>')"
        )
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise PermissionDeniedError(
            f"a change from origin {origin[:100]!r} is not accepted with this server's session cookie"
        )


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _operator(request: Request, credentials: HTTPAuthorizationCredentials | None, need: Role) -> Operator:
    """The operator behind the request's bearer token or session, if its role grants `need`."""
    session_id = ""
    if credentials is not None:
        token = credentials.credentials
    elif (found := console_session(request)) is not None:
        session_id, session = found
        check_csrf(request, session)
        token = session.token
    else:
        raise UnauthenticatedError(
            "send the header 'Authorization: Bearer <token>' or sign in to the web console; create a token "
            "with `facefleet-server tokens create NAME --role admin|query`"
        )
    try:
        return _token_check(request, token, need)()
    except UnauthenticatedError:
        if session_id:
            sessions(request).end(session_id)
        raise


def _token_check(request: Request, token: str, need: Role) -> Callable[[], Operator]:
    metadata = (("authorization", f"Bearer {token}"),)
    auth = handlers(request).auth
    return lambda: auth.operator(metadata, need)


async def query_operator(request: Request, credentials: Credentials) -> Operator:
    return _operator(request, credentials, "query")


async def admin_operator(request: Request, credentials: Credentials) -> Operator:
    return _operator(request, credentials, "admin")


ROLES: dict[Callable[..., Any], Role] = {admin_operator: "admin", query_operator: "query"}
"""The role each operator dependency asks for."""


def required_role(dependant: Dependant) -> Role | None:
    """The role a route's AdminOperator or QueryOperator (or one of its dependencies') asks for ("admin"
    when both are there), None when it has neither."""
    pending, roles = [dependant], set()
    while pending:
        current = pending.pop()
        if current.call in ROLES:
            roles.add(ROLES[current.call])
        pending.extend(current.dependencies)
    return "admin" if "admin" in roles else "query" if roles else None


async def check_operator(request: Request, need: Role) -> Operator:
    """The check of AdminOperator or QueryOperator, made before the request's body is read: a request
    without a valid token or session (or CSRF token) is refused with nothing of its body parsed."""
    return _operator(request, await bearer(request), need)


async def admin_recheck(request: Request, credentials: Credentials) -> Callable[[], Operator]:
    """For a request that lasts (an upload): a check of its token again, once it is all in (revoked or
    demoted meanwhile), of the token a session signed in with rather than the session, whose idle limit a
    long upload outlives. Declared after AdminOperator, which has found the session or the token."""
    if credentials is not None:
        return _token_check(request, credentials.credentials, "admin")
    found = console_session(request)
    if found is None:
        raise UnauthenticatedError("the console session ended; sign in again")
    return _token_check(request, found[1].token, "admin")


Handlers = Annotated[OperatorHandlers, Depends(handlers)]
QueryOperator = Annotated[Operator, Depends(query_operator)]
AdminOperator = Annotated[Operator, Depends(admin_operator)]
AdminRecheck = Annotated[Callable[[], Operator], Depends(admin_recheck)]
