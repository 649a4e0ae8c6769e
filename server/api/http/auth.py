"""Who is calling: the operator behind `Authorization: Bearer <token>`, checked by the server's Authenticator
(the tokens and roles of the gRPC API). Reads need the "query" role (an "admin" token has it too); changes,
and reads of people, face images and the admin's lists, need "admin", as in AdminService."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.security import Operator
from facefleet.server.domain.records import Role
from facefleet.server.errors import UnauthenticatedError

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An operator token: `facefleet-server tokens create NAME --role admin|query`",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def handlers(request: Request) -> OperatorHandlers:
    """The server's operator handlers, which the application holds (facefleet.server.api.http.app)."""
    return cast(OperatorHandlers, request.app.state.handlers)


def _operator(request: Request, credentials: HTTPAuthorizationCredentials | None, need: Role) -> Operator:
    if credentials is None:
        raise UnauthenticatedError(
            "send the header 'Authorization: Bearer <token>'; create a token with "
            "`facefleet-server tokens create NAME --role admin|query`"
        )
    metadata = (("authorization", f"Bearer {credentials.credentials}"),)
    return handlers(request).auth.operator(metadata, need)


async def query_operator(request: Request, credentials: Credentials) -> Operator:
    return _operator(request, credentials, "query")


async def admin_operator(request: Request, credentials: Credentials) -> Operator:
    return _operator(request, credentials, "admin")


Handlers = Annotated[OperatorHandlers, Depends(handlers)]
QueryOperator = Annotated[Operator, Depends(query_operator)]
AdminOperator = Annotated[Operator, Depends(admin_operator)]
