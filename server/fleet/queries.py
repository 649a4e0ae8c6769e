"""QueryService logic: events, aggregates and fleet status for dashboards (and `facefleet-server query`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from facefleet.link.checks import check_id, utc_now
from facefleet.server.domain.models import AgentModels
from facefleet.server.domain.queries import (
    MAX_FILTER_VALUES,
    AgentStatus,
    AttributeCounts,
    DoorAccess,
    EventCursor,
    EventFilter,
    EventPage,
    ExpressionCount,
    IntervalCount,
    UnknownRate,
    check_interval,
    page_size,
)
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.fleet.device_admin import DeviceView, device_views
from facefleet.server.state.interface import State


class QueryHandler:
    """watching: devices with an open Watch stream now; head: the current gallery revision."""

    def __init__(
        self,
        state: State,
        *,
        online_window: timedelta,
        watching: Callable[[], frozenset[str]] = frozenset,
        head: Callable[[], int] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.state = state
        self.online_window = online_window
        self.watching = watching
        self.head = head or state.head_revision
        self.clock = clock

    async def events(self, flt: EventFilter, page_token: str, size: int) -> EventPage:
        cursor = EventCursor.decode(page_token) if page_token else None
        limit = page_size(size)
        return await asyncio.to_thread(self.state.list_events, flt, cursor, limit)

    async def counts(
        self, flt: EventFilter, interval_s: int, *, per_device: bool = True
    ) -> list[IntervalCount]:
        check_interval(interval_s, flt)
        flt = flt.without_persons("CountEvents")
        return await asyncio.to_thread(
            lambda: self.state.count_events(flt, interval_s, per_device=per_device)
        )

    async def expressions(self, flt: EventFilter, *, per_device: bool) -> list[ExpressionCount]:
        flt = flt.without_persons("ExpressionDistribution")
        return await asyncio.to_thread(lambda: self.state.expression_counts(flt, per_device=per_device))

    async def unknown_rate(self, flt: EventFilter) -> tuple[UnknownRate, list[UnknownRate]]:
        if flt.decisions:
            raise InvalidArgumentError("UnknownFaceRate cannot filter by decisions")
        rows = await asyncio.to_thread(self.state.unknown_rates, flt.without_persons("UnknownFaceRate"))
        total = UnknownRate("", sum(r.face_events for r in rows), sum(r.unknown_events for r in rows))
        return total, rows

    async def access(self, flt: EventFilter) -> list[DoorAccess]:
        return await asyncio.to_thread(self.state.access_summary, flt.without_persons("AccessSummary"))

    async def attributes(
        self, flt: EventFilter, *, per_device: bool
    ) -> tuple[AttributeCounts, list[AttributeCounts]]:
        """The estimated genders and age bands of the face events: fleet-wide, and per device if asked."""
        rows = await asyncio.to_thread(
            self.state.attribute_counts, flt.without_persons("AttributeDistribution")
        )
        return AttributeCounts.total(rows), rows if per_device else []

    async def fleet(self, device_ids: Sequence[str] = ()) -> tuple[list[AgentStatus], int]:
        if len(device_ids) > MAX_FILTER_VALUES:
            raise InvalidArgumentError(f"at most {MAX_FILTER_VALUES} device_ids")
        for device_id in device_ids:
            check_id("device_id", device_id)

        def read() -> tuple[list[DeviceView], dict[str, AgentModels]]:
            return device_views(self.state, tuple(device_ids)), self.state.models.agent_models(device_ids)

        views, models = await asyncio.to_thread(read)
        head, now, watching = self.head(), self.clock(), self.watching()
        return [
            AgentStatus(
                device_id=a.device_id,
                online=a.device_id in watching or now - a.last_seen <= self.online_window,
                watching=a.device_id in watching,
                last_seen=a.last_seen,
                registered_at=a.registered_at,
                agent_version=a.agent_version,
                hostname=a.hostname,
                model_versions=a.model_versions,
                model_precisions=a.model_precisions,
                capabilities=a.capabilities,
                gallery_revision=a.gallery_revision,
                revision_lag=max(0, head - a.gallery_revision),
                health=a.health,
                model_statuses=models[a.device_id].statuses if a.device_id in models else (),
                groups=models[a.device_id].groups if a.device_id in models else (),
                device_status=v.device.status,
                certificate_expires_at=v.certificate_expires_at,
            )
            for v in views
            if (a := v.agent) is not None
        ], head
