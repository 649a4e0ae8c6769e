"""gRPC servicers: decode the request (wire), authenticate, call the handler, encode the reply. Domain
errors become `context.abort(<their status>, <their message>)`; anything else is logged and becomes
INTERNAL without details. AdminService's changes are recorded in the admin audit log
(facefleet.server.api.audit) by `audited`, which knows each RPC's action and target."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from facefleet.link import serde
from facefleet.link.errors import LinkError
from facefleet.link.fleet import WATCH_END_KEY, WATCH_END_MAX_AGE, WATCH_END_SHUTDOWN
from facefleet.server.api.handlers import OperatorHandlers
from facefleet.server.api.security import Authenticator
from facefleet.server.api.wire import admin as admin_wire
from facefleet.server.api.wire import devices as devices_wire
from facefleet.server.api.wire import fleet as fleet_wire
from facefleet.server.api.wire import query as query_wire
from facefleet.server.api.wire import services
from facefleet.server.domain.devices import DeviceRefusedError
from facefleet.server.errors import ServerError
from facefleet.server.fleet.link import FleetHandler

log = logging.getLogger(__name__)
S = TypeVar("S")
WIPE_METADATA_KEY = "facefleet-device-action"
WIPE_GALLERY = "wipe-gallery"
"""Trailing metadata of a refusal that tells a device revoked with --wipe to erase its gallery."""


async def _abort(context: Any, name: str, exc: Exception) -> None:
    """End the call with the status a domain error names (INVALID_ARGUMENT for a LinkError); anything else
    is logged with its traceback and becomes INTERNAL without details."""
    if isinstance(exc, DeviceRefusedError) and exc.wipe:
        context.set_trailing_metadata(((WIPE_METADATA_KEY, WIPE_GALLERY),))
    if isinstance(exc, ServerError):
        await context.abort(grpc.StatusCode[exc.status], str(exc))
    elif isinstance(exc, LinkError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    else:
        log.exception("%s failed", name, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")


def unary(method: Callable[[S, Any, Any], Awaitable[Any]]) -> Callable[[S, Any, Any], Awaitable[Any]]:
    @functools.wraps(method)
    async def call(self: S, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method.__name__, exc)

    return call


def streaming(
    method: Callable[[S, Any, Any], AsyncIterator[Any]],
) -> Callable[[S, Any, Any], AsyncIterator[Any]]:
    @functools.wraps(method)
    async def call(self: S, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for message in method(self, request, context):
                yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method.__name__, exc)

    return call


Describe = Callable[[Any, Any], tuple[str, str]]
"""(request, response or None when refused) → (action, target) of an audited RPC."""


def audited(describe: Describe) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """An AdminService change: authenticate the admin, run it, and record who did what and the outcome
    (success or the refusal) in the audit log. Calls refused before authentication are not recorded."""

    def wrap(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(self: AdminServicer, request: Any, context: Any) -> Any:
            operator = self.auth.operator(context.invocation_metadata() or (), "admin")
            try:
                response = await method(self, request, context)
            except Exception as exc:
                await self.audit.record(operator.name, *describe(request, None), exc)
                raise
            await self.audit.record(operator.name, *describe(request, response), None)
            return response

        return call

    return wrap


def _enrolled(request: Any, response: Any) -> tuple[str, str]:
    return "people.enrol", response.person.person_id if response is not None else request.person_id


def _published(request: Any, response: Any) -> tuple[str, str]:
    return "models.publish", response.model.model_id if response is not None else ""


def _changed(request: Any, response: Any) -> tuple[str, str]:
    return f"rollouts.{admin_wire.ROLLOUT_ACTIONS.get(request.action, 'change')}", str(request.rollout_id)


class FleetServicer(services.FleetServicerBase):
    def __init__(self, handler: FleetHandler, auth: Authenticator) -> None:
        self.handler = handler
        self.auth = auth

    @unary
    async def Register(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        registration, ignored = serde.registration_from_proto(request, device)
        return serde.welcome_to_proto(await self.handler.register(registration, ignored))

    @streaming
    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        auth_context = context.auth_context()
        device = self.auth.device(auth_context, request.device_id)
        updates = self.handler.watch(
            device,
            request.from_revision,
            request.gallery_id,
            tuple(request.embedding_models),
            admitted=lambda: self.auth.device(auth_context, request.device_id),
        )
        async for update in updates:
            yield serde.watch_update_to_proto(update)
        reason = WATCH_END_SHUTDOWN if self.handler.fanout.closed else WATCH_END_MAX_AGE
        context.set_trailing_metadata(((WATCH_END_KEY, reason),))

    @streaming
    async def DownloadModel(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        auth_context = context.auth_context()
        device = self.auth.device(auth_context, request.device_id)
        model_id, file_name, offset = fleet_wire.download_from_proto(request)
        async for chunk in self.handler.download(device, model_id, file_name, offset):
            self.auth.device(auth_context, request.device_id)  # a device refused meanwhile gets no more
            yield fleet_wire.chunk_to_proto(chunk)

    @unary
    async def ReportModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        statuses, versions, precisions, ignored = fleet_wire.report_models_from_proto(request)
        await self.handler.report_models(device, statuses, versions, precisions, ignored)
        return fleet_wire.report_models_response()

    @unary
    async def AckGallery(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        return fleet_wire.ack_response(await self.handler.acknowledge(device, request.gallery_revision))

    @unary
    async def ReportResults(self, request: Any, context: Any) -> Any:  # noqa: N802
        device = self.auth.device(context.auth_context(), request.device_id)
        self.handler.check_report_size(len(request.events))
        report = fleet_wire.report_from_proto(request, device)
        outcome = await self.handler.report(
            device, report.events, report.rejected, report.health, report.deferred
        )
        return serde.outcome_to_proto(outcome)


class AdminServicer(services.AdminServicerBase):
    def __init__(self, handlers: OperatorHandlers) -> None:
        self.handler = handlers.people
        self.auth = handlers.auth
        self.models = handlers.models
        self.audit = handlers.audit
        self.devices = handlers.devices

    @unary
    @audited(_enrolled)
    async def EnrollPerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin_wire.enrolment_response(
            await self.handler.enrol(admin_wire.enrolment_from_proto(request))
        )

    @unary
    @audited(lambda request, _: ("people.update", request.person_id))
    async def UpdatePerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin_wire.update_response(await self.handler.update(admin_wire.update_from_proto(request)))

    @unary
    @audited(lambda request, _: ("people.delete", request.person_id))
    async def DeletePerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin_wire.delete_response(await self.handler.delete(admin_wire.person_id_from_proto(request)))

    @unary
    async def GetPerson(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        view = await self.handler.get(admin_wire.person_id_from_proto(request))
        return admin_wire.get_person_response(
            view.person, view.stored_crops, with_vectors=request.include_embeddings
        )

    @unary
    async def ListPeople(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        people, token = await self.handler.page(
            page_token=request.page_token, size=request.page_size, group=request.group
        )
        return admin_wire.people_response(people, token, self.handler.fanout.head)

    @unary
    @audited(_published)
    async def PublishModel(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        parts = (admin_wire.upload_part_from_proto(message) async for message in request_iterator)
        metadata = context.invocation_metadata() or ()
        model = await self.models.publish(parts, still_allowed=lambda: self.auth.operator(metadata, "admin"))
        return admin_wire.publish_response(model)

    @unary
    async def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return admin_wire.models_response(await self.models.models(request.task))

    @unary
    @audited(lambda request, _: ("models.retire", request.model_id))
    async def RetireModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        return admin_wire.retire_response(await self.models.retire(request.model_id))

    @unary
    @audited(lambda request, _: ("rollouts.start", request.model_id))
    async def StartRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        start = admin_wire.start_rollout_from_proto(request)
        return admin_wire.start_rollout_response(
            await self.models.start(start.model_id, start.target, start.max_failures, start.on_failures)
        )

    @unary
    @audited(_changed)
    async def ChangeRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        rollout_id, action, percent = admin_wire.change_rollout_from_proto(request)
        return admin_wire.change_rollout_response(await self.models.change(rollout_id, action, percent))

    @unary
    async def ListRollouts(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return admin_wire.rollouts_response(await self.models.rollouts())

    @unary
    async def GetRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return admin_wire.rollout_response(*await self.models.rollout(request.rollout_id))

    @unary
    async def ListAudit(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        flt, cursor, size = admin_wire.audit_query_from_proto(request, self.audit.clock())
        return admin_wire.audit_response(await self.audit.page(flt, cursor, size))

    @unary
    async def ListDevices(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "admin")
        return devices_wire.devices_response(
            await self.devices.list(devices_wire.device_ids_from_proto(request))
        )

    @unary
    @audited(lambda request, _: (f"devices.{devices_wire.action_name(request)}", request.device_id[:80]))
    async def ChangeDevice(self, request: Any, context: Any) -> Any:  # noqa: N802
        device_id, action, reason, wipe = devices_wire.change_from_proto(request)
        who = self.auth.operator(context.invocation_metadata() or (), "admin").name
        return devices_wire.change_response(await self.devices.change(device_id, action, reason, wipe, who))


class QueryServicer(services.QueryServicerBase):
    def __init__(self, handlers: OperatorHandlers) -> None:
        self.handler = handlers.queries
        self.auth = handlers.auth

    @unary
    async def ListEvents(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        page = await self.handler.events(
            query_wire.filter_from_proto(request.filter), request.page_token, request.page_size
        )
        return query_wire.events_response(page)

    @unary
    async def CountEvents(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        counts = await self.handler.counts(
            query_wire.filter_from_proto(request.filter), request.interval_seconds
        )
        return query_wire.counts_response(counts)

    @unary
    async def ExpressionDistribution(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        flt = query_wire.filter_from_proto(request.filter)
        return query_wire.expressions_response(
            await self.handler.expressions(flt, per_device=request.per_device)
        )

    @unary
    async def UnknownFaceRate(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        total, per_device = await self.handler.unknown_rate(query_wire.filter_from_proto(request.filter))
        return query_wire.unknown_rate_response(total, per_device)

    @unary
    async def AccessSummary(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        return query_wire.access_response(
            await self.handler.access(query_wire.filter_from_proto(request.filter))
        )

    @unary
    async def FleetStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        agents, head = await self.handler.fleet(tuple(request.device_ids))
        return query_wire.fleet_response(agents, head, self.handler.clock())

    @unary
    async def AttributeDistribution(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.auth.operator(context.invocation_metadata() or (), "query")
        flt = query_wire.filter_from_proto(request.filter)
        total, per_device = await self.handler.attributes(flt, per_device=request.per_device)
        return query_wire.attributes_response(total, per_device)
