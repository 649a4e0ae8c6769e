"""Operators' calls (AdminService, QueryService) without a known bearer token are refused with UNAUTHENTICATED
before their request message is read, so that callers without a token cannot make the server take in messages
of up to listen.max_message_bytes. A grpc.aio server interceptor answers them with a handler that takes a
stream of requests and reads none: gRPC receives a unary request whole before it calls its handler, a
stream's messages only as the handler asks for them. The servicers still check the token, and its role."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from facefleet.server.api.security import Authenticator
from facefleet.server.errors import ServerError

log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")


class TokenGate(grpc.aio.ServerInterceptor):
    """Refuses a call of a method of one of `services` (full names) whose bearer token is missing, malformed
    or unknown; a method that does not exist stays UNIMPLEMENTED, so that the metrics (which count every
    refusal by method) never count a name the caller made up."""

    def __init__(self, auth: Authenticator, services: Iterable[str]) -> None:
        self.auth = auth
        self.prefixes = tuple(f"/{name}/" for name in services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[T, U] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[T, U] | None:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self.prefixes):
            return handler  # None: an unknown method, UNIMPLEMENTED whatever the token
        try:
            self.auth.operator(handler_call_details.invocation_metadata or (), "query")  # either role
        except ServerError as exc:
            return _refusal(grpc.StatusCode[exc.status], str(exc))
        except Exception:
            log.exception("%s: the token check failed", handler_call_details.method)
            return _refusal(grpc.StatusCode.INTERNAL, "internal server error; see the server log")
        return handler


def _refusal(code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that ends the call with `code` and reads none of its request."""

    async def refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, details)

    return grpc.stream_unary_rpc_method_handler(refuse)
