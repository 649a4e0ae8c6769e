"""Errors as RFC 9457 problem details (`application/problem+json`): the same cases as the gRPC status codes.

A domain error (facefleet.server.errors) names its gRPC status; the HTTP status follows this table, the
detail is its message and `code` is the gRPC status name. FAILED_PRECONDITION is 409 Conflict: the request
is valid but the server's state refuses it (412 is kept for failed conditional headers, which this API does
not use). Anything unexpected is logged with its traceback and answered 500 without details."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from facefleet.link.errors import LinkError
from facefleet.server.api.http.auth import check_operator, required_role
from facefleet.server.api.http.uploads import MAX_JSON_BYTES, Body, BodyTimeoutError
from facefleet.server.errors import InvalidArgumentError, ServerError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:facefleet:problem:"
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""gRPC status name → HTTP status; any other (INTERNAL, DATA_LOSS, UNKNOWN) is 500."""
CODES_BY_HTTP = {
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
"""Routing errors (no such path, a method the path does not take) and rate limits as gRPC status names."""
WWW_AUTHENTICATE = 'Bearer realm="facefleet"'
INTERNAL_DETAIL = "internal server error; see the server log"
MAX_ANONYMOUS_JSON_BYTES = 4 * 1024
"""Largest JSON body of a route that takes no token (the console's sign-in: a token of at most 256
characters)."""


class Problem(BaseModel):
    """An RFC 9457 problem detail. Extension members: `code` (the gRPC status name of the same error),
    `errors` (each invalid request field), `images` (each enrolment image and why it was refused)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:facefleet:problem:<code in lower case with hyphens>")
    title: str
    status: int
    detail: str = ""
    instance: str = Field("", description="The request path")
    code: str = Field(description="The gRPC status name of the same error, e.g. NOT_FOUND")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "The request was refused (RFC 9457 problem details)",
        "content": {MEDIA_TYPE: {"schema": Problem.model_json_schema()}},
    },
    "5XX": {
        "description": "The server failed (RFC 9457 problem details)",
        "content": {MEDIA_TYPE: {"schema": Problem.model_json_schema()}},
    },
}
"""The error responses every route documents in the OpenAPI document."""


class DetailedError(InvalidArgumentError):
    """INVALID_ARGUMENT whose problem detail carries more members, e.g. every rejected image."""

    def __init__(self, message: str, **members: Any) -> None:
        super().__init__(message)
        self.members = members


def problem(
    request: Request,
    code: str,
    detail: str,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    **members: Any,
) -> JSONResponse:
    """The problem response of a gRPC status name and a message (status: an HTTP status other than the
    code's own, e.g. 405)."""
    status = status or HTTP_STATUS.get(code, 500)
    body = Problem(
        type=TYPE_PREFIX + code.lower().replace("_", "-"),
        title=code.replace("_", " ").capitalize(),
        status=status,
        detail=detail,
        instance=request.url.path,
        code=code,
        **members,
    )
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    if status == 413:  # the rest of the body may be unread: the connection cannot carry another request
        headers["Connection"] = "close"
    return JSONResponse(body.model_dump(), status, headers=headers, media_type=MEDIA_TYPE)


def problem_of(request: Request, exc: Exception) -> JSONResponse:
    """The problem response of any exception a route raised."""
    if isinstance(exc, HTTPException) and isinstance(
        exc.__cause__, (ServerError, LinkError, BodyTimeoutError)
    ):
        exc = exc.__cause__  # e.g. a body over its limit, found while FastAPI read it
    if isinstance(exc, BodyTimeoutError):  # the rest of the body is unread: the connection is closed
        return problem(request, "DEADLINE_EXCEEDED", str(exc), status=408, headers={"Connection": "close"})
    if isinstance(exc, ServerError):
        members = exc.members if isinstance(exc, DetailedError) else {}
        return problem(request, exc.status, str(exc), **members)
    if isinstance(exc, LinkError):
        return problem(request, "INVALID_ARGUMENT", str(exc))
    if isinstance(exc, RequestValidationError):
        errors = [_field_error(e) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(request, "INVALID_ARGUMENT", detail, errors=errors)
    if isinstance(exc, HTTPException):
        code = CODES_BY_HTTP.get(exc.status_code, "INVALID_ARGUMENT")
        return problem(request, code, str(exc.detail), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, ClientDisconnect):
        log.info("%s %s: the client went away before sending the whole request", request.method, request.url)
        return problem(request, "INVALID_ARGUMENT", "the request body ended early")
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(request, "INTERNAL", INTERNAL_DETAIL)


def _field_error(error: Any) -> dict[str, str]:
    where = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    return {"field": ".".join(where) or "request", "message": str(error.get("msg", "invalid"))}


async def routing_problem(request: Request, exc: Exception) -> Response:
    """Exception handler for what fails outside a route (no such path, a method the path does not take)."""
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        detail = f"no such resource: {request.url.path}; the API is described at /api/openapi.json"
        return problem(request, "NOT_FOUND", detail)
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        detail = f"{request.url.path} does not take {request.method}"
        return problem(request, "UNIMPLEMENTED", detail, status=405, headers=exc.headers)
    return problem_of(request, exc)


class ProblemRoute(APIRoute):
    """The route class of the API: whatever a route or its dependencies raise becomes a problem detail (the
    rest of the request body drained first, for at most listen.http_body_timeout_seconds, else the
    connection is closed after the answer). A route that takes a JSON body checks the caller's token or
    session before it reads the body, and refuses a body past MAX_JSON_BYTES (past MAX_ANONYMOUS_JSON_BYTES
    where it needs no token, as the console's sign-in, whose body must also be all in within
    listen.http_body_timeout_seconds: 408)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = getattr(self, "body_field", None) is not None
        need = required_role(self.dependant) if takes_body else None
        limit = None if not takes_body else MAX_JSON_BYTES if need else MAX_ANONYMOUS_JSON_BYTES

        async def route(request: Request) -> Response:
            timeout_s: float = request.app.state.body_timeout_s
            body = Body(request, limit, timeout_s if takes_body and need is None else None)
            try:
                body.check_declared()
                if need is not None:
                    await check_operator(request, need)
                return await handler(body.request)
            except Exception as exc:
                response = problem_of(request, exc)
            if not await body.drain(timeout_s):
                response.headers["Connection"] = "close"
            return response

        return route
