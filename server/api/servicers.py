"""gRPC servicers: decode the request (wire), authenticate, call the handler, encode the reply. Domain
errors become `context.abort(<their status>, <their message>)`; anything else is logged and becomes
INTERNAL without details."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.server.api import wire, wire_models
from facefleet.server.api.security import Authenticator
from facefleet.server.errors import ServerError
from facefleet.server.fleet.link import FleetHandler
from facefleet.server.fleet.queries import QueryHandler
from facefleet.server.gallery.people import PeopleHandler
from facefleet.server.rollouts.uploads import ModelAdmin

log = logging.getLogger(__name__)
S = TypeVar("S")


def unary(method: Callable[[S, Any, Any], Awaitable[Any]]) -> Callable[[S, Any, Any], Awaitable[Any]]:
    @functools.wraps(method)
    async def call(self: S, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except ServerError as exc:
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except LinkError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")

    return call


def streaming(
    method: Callable[[S, Any, Any], AsyncIterator[Any]],
) -> Callable[[S, Any, Any], AsyncIterator[Any]]:
    @functools.wraps(method)
    async def call(self: S, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for message in method(self, request, context):
                yield message
        except ServerError as exc:
            await context.abort(grpc.StatusCode[exc.status], str(exc))
        except LinkError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")

    return call


class FleetServicer(wire.FleetServicerBase):
    def __init__(self, handler: FleetHandler, auth: Authenticator) -> None:
        self.handler = handler
        self.auth = auth

    @unary
    async def Register(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        registration = serde.registration_from_proto(request, device)
        return serde.welcome_to_proto(await self.handler.register(registration))

    @streaming
    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        updates = self.handler.watch(
            device, request.from_revision, request.gallery_id, tuple(request.embedding_models)
        )
        async for update in updates:
            yield serde.watch_update_to_proto(update)

    @streaming
    async def DownloadModel(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        model_id, file_name, offset = wire_models.download_from_proto(request)
        async for chunk in self.handler.download(device, model_id, file_name, offset):
            yield wire_models.chunk_to_proto(chunk)

    @unary
    async def ReportModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        statuses, versions = wire_models.report_models_from_proto(request)
        await self.handler.report_models(device, statuses, versions)
        return wire_models.report_models_response()

    @unary
    async def AckGallery(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        return wire.ack_response(await self.handler.acknowledge(device, request.gallery_revision))

    @unary
    async def ReportResults(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        events, rejected, health = wire.report_from_proto(request, device)
        return serde.outcome_to_proto(await self.handler.report(device, events, rejected, health))


class AdminServicer(wire.AdminServicerBase):
    def __init__(self, handler: PeopleHandler, auth: Authenticator, models: ModelAdmin) -> None:
        self.handler = handler
        self.auth = auth
        self.models = models

    @unary
    async def EnrollPerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire.enrolment_response(await self.handler.enrol(wire.enrolment_from_proto(request)))

    @unary
    async def UpdatePerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire.update_response(await self.handler.update(wire.update_from_proto(request)))

    @unary
    async def DeletePerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire.delete_response(await self.handler.delete(wire.person_id_from_proto(request)))

    @unary
    async def GetPerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        view = await self.handler.get(wire.person_id_from_proto(request))
        return wire.get_person_response(
            view.person, view.stored_crops, with_vectors=request.include_embeddings
        )

    @unary
    async def ListPeople(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        people, token = await self.handler.page(
            page_token=request.page_token, size=request.page_size, group=request.group
        )
        return wire.people_response(people, token, self.handler.fanout.head)

    @unary
    async def PublishModel(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        parts = (wire_models.upload_part_from_proto(message) async for message in request_iterator)
        return wire_models.publish_response(await self.models.publish(parts))

    @unary
    async def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire_models.models_response(await self.models.models(request.task))

    @unary
    async def RetireModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire_models.retire_response(await self.models.retire(request.model_id))

    @unary
    async def StartRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        model_id, target = wire_models.start_rollout_from_proto(request)
        return wire_models.start_rollout_response(await self.models.start(model_id, target))

    @unary
    async def ChangeRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        rollout_id, action, percent = wire_models.change_rollout_from_proto(request)
        return wire_models.change_rollout_response(await self.models.change(rollout_id, action, percent))

    @unary
    async def ListRollouts(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire_models.rollouts_response(await self.models.rollouts())

    @unary
    async def GetRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return wire_models.rollout_response(*await self.models.rollout(request.rollout_id))


class QueryServicer(wire.QueryServicerBase):
    def __init__(self, handler: QueryHandler, auth: Authenticator) -> None:
        self.handler = handler
        self.auth = auth

    @unary
    async def ListEvents(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        page = await self.handler.events(
            wire.filter_from_proto(request.filter), request.page_token, request.page_size
        )
        return wire.events_response(page)

    @unary
    async def CountEvents(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        counts = await self.handler.counts(wire.filter_from_proto(request.filter), request.interval_seconds)
        return wire.counts_response(counts)

    @unary
    async def ExpressionDistribution(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        flt = wire.filter_from_proto(request.filter)
        return wire.expressions_response(await self.handler.expressions(flt, per_device=request.per_device))

    @unary
    async def UnknownFaceRate(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        total, per_device = await self.handler.unknown_rate(wire.filter_from_proto(request.filter))
        return wire.unknown_rate_response(total, per_device)

    @unary
    async def AccessSummary(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        return wire.access_response(await self.handler.access(wire.filter_from_proto(request.filter)))

    @unary
    async def FleetStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        agents, head = await self.handler.fleet(tuple(request.device_ids))
        return wire_models.fleet_response(agents, head, self.handler.clock())
