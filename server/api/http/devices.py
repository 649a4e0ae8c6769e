"""/api/devices: every device the server registered or issued a certificate to, with its status and
certificates; disable, enable or revoke one (revoke with wipe: the device erases its gallery when it next
calls). A disabled or revoked device is refused on every agent call at once. Needs an admin token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from facefleet.link.checks import check_id
from facefleet.server.api.http.audited import audited
from facefleet.server.api.http.auth import AdminOperator, Handlers
from facefleet.server.api.http.problems import ERROR_RESPONSES, ProblemRoute
from facefleet.server.domain.devices import Certificate, DeviceStatus
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.fleet.device_admin import DeviceView

router = APIRouter(prefix="/devices", tags=["devices"], route_class=ProblemRoute, responses=ERROR_RESPONSES)
MAX_DEVICE_IDS = 1000
DeviceId = Annotated[str, Path(description="1–128 letters, digits, '.', '_', ':', '@', '-'")]


class CertificateOut(BaseModel):
    serial: str = Field(description="Lower-case hexadecimal")
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None
    revoked_reason: str

    @classmethod
    def of(cls, c: Certificate) -> CertificateOut:
        return cls(
            serial=c.serial,
            not_before=c.not_before,
            not_after=c.not_after,
            issued_at=c.issued_at,
            revoked_at=c.revoked_at,
            revoked_reason=c.revoked_reason,
        )


class DeviceOut(BaseModel):
    device_id: str
    status: DeviceStatus
    reason: str = Field(description="Why it was last disabled, enabled or revoked")
    changed_at: datetime | None
    changed_by: str = Field(description="The token name, or 'local' for the server's command line")
    wipe: bool = Field(description="Revoked with wipe: told to erase its gallery when it calls")
    wipe_sent_at: datetime | None
    certificates: list[CertificateOut] = Field(description="Oldest first")
    certificate_expires: datetime | None
    last_seen: datetime | None = Field(description="None for a device that never registered")

    @classmethod
    def of(cls, view: DeviceView) -> DeviceOut:
        d = view.device
        return cls(
            device_id=d.device_id,
            status=d.status,
            reason=d.reason,
            changed_at=d.changed_at,
            changed_by=d.changed_by,
            wipe=d.wipe,
            wipe_sent_at=d.wipe_sent_at,
            certificates=[CertificateOut.of(c) for c in d.certificates],
            certificate_expires=view.certificate_expires_at,
            last_seen=view.agent.last_seen if view.agent else None,
        )


class Devices(BaseModel):
    devices: list[DeviceOut] = Field(description="By device id")


class DeviceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", description="At most 256 printable characters, kept with the device")
    wipe: bool = Field(False, description="revoke only: the device erases its gallery when it next calls")


@router.get("", summary="Devices with their status and certificates", response_model=Devices)
async def devices(
    operator: AdminOperator,
    handlers: Handlers,
    device_id: Annotated[list[str], Query(description="Only these devices (repeat the parameter)")] = [],  # noqa: B006
) -> Devices:
    if len(device_id) > MAX_DEVICE_IDS:
        raise InvalidArgumentError(f"device_id: at most {MAX_DEVICE_IDS}")
    ids = tuple(check_id("device_id", d) for d in device_id)
    return Devices(devices=[DeviceOut.of(v) for v in await handlers.devices.list(ids)])


@router.post("/{device_id}/{action}", summary="Disable, enable or revoke a device", response_model=DeviceOut)
async def change(
    device_id: DeviceId,
    action: Literal["disable", "enable", "revoke"],
    operator: AdminOperator,
    handlers: Handlers,
    body: DeviceChange | None = None,
) -> DeviceOut:
    body = body or DeviceChange()
    async with audited(handlers, operator, f"devices.{action}", device_id[:80]):
        check_id("device_id", device_id)
        view = await handlers.devices.change(device_id, action, body.reason, body.wipe, operator.name)
    return DeviceOut.of(view)
