"""What operators do with devices, the same through AdminService and the local command line: list them with
their status, certificates and last contact; disable, enable or revoke one; record a certificate issued to
one. Each change bumps the devices revision, which the serving process follows
(facefleet.server.fleet.devices)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from facefleet.link.checks import check_id, utc_now
from facefleet.server.domain.devices import DEVICE_ACTIONS, Certificate, Device, DeviceAction
from facefleet.server.domain.records import AgentInfo
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.state.interface import State

CERTIFICATE_EXPIRY_HEALTH = "certificate_expires_at"
"""The health figure in which an agent reports when its client certificate expires (Unix seconds)."""


@dataclass(frozen=True)
class DeviceView:
    """A device as operators see it: its admission record (status active and no certificates when it has
    none) and what it last told the server (None: never registered)."""

    device: Device
    agent: AgentInfo | None

    @property
    def device_id(self) -> str:
        return self.device.device_id

    @property
    def certificate_expires_at(self) -> datetime | None:
        """When the certificate the device reports expires, else its newest recorded one (UTC)."""
        if self.agent is not None and CERTIFICATE_EXPIRY_HEALTH in self.agent.health:
            try:
                return datetime.fromtimestamp(self.agent.health[CERTIFICATE_EXPIRY_HEALTH], timezone.utc)
            except (OverflowError, OSError, ValueError):
                return None
        current = self.device.current_certificate()
        return None if current is None else current.not_after


def device_views(state: State, device_ids: tuple[str, ...] = ()) -> list[DeviceView]:
    """Every device the server has registered or issued a certificate to (or only device_ids), by id."""
    devices = {d.device_id: d for d in state.devices.list_devices(device_ids)}
    agents = {a.device_id: a for a in state.list_agents(device_ids)}
    return [DeviceView(devices.get(i) or Device(i), agents.get(i)) for i in sorted({*devices, *agents})]


def change_device(
    state: State, device_id: str, action: str, *, reason: str, who: str, now: datetime, wipe: bool = False
) -> Device:
    """Disable, enable or revoke a device (wipe: with revoke, the device erases its gallery when it next
    calls). InvalidArgumentError for an action that does not apply, NotFoundError for an unknown device."""
    check_id("device id", device_id)
    if action not in DEVICE_ACTIONS:
        raise InvalidArgumentError(f"device action {action!r}: use one of {', '.join(DEVICE_ACTIONS)}")
    verb: DeviceAction = action
    return state.devices.change_device(device_id, lambda d: d.changed(verb, reason, who, now, wipe=wipe))


def record_certificate(
    state: State,
    device_id: str,
    serial: str,
    not_before: datetime,
    not_after: datetime,
    who: str,
    now: datetime,
) -> Device:
    """Record a client certificate just issued to a device; a revoked device is admitted again with it."""
    return state.devices.add_certificate(Certificate(serial, device_id, not_before, not_after, now), who)


class DeviceAdmin:
    """Device listing and changes for AdminService: blocking state calls in worker threads, and `changed`
    awaited after a change so that the serving process admits (or refuses) the device at once."""

    def __init__(
        self, state: State, changed: Callable[[], Awaitable[None]], clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.state = state
        self.changed = changed
        self.clock = clock

    async def list(self, device_ids: tuple[str, ...]) -> list[DeviceView]:
        return await asyncio.to_thread(device_views, self.state, device_ids)

    async def change(self, device_id: str, action: str, reason: str, wipe: bool, who: str) -> DeviceView:
        def apply() -> DeviceView:
            change_device(self.state, device_id, action, reason=reason, who=who, now=self.clock(), wipe=wipe)
            return device_views(self.state, (device_id,))[0]

        view = await asyncio.to_thread(apply)
        await self.changed()
        return view
