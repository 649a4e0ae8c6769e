"""AdminService's device messages (ListDevices, ChangeDevice) and the DeviceStatus enum that fleet status
shares. `*_from_proto` validate and raise InvalidArgumentError naming the field."""

from __future__ import annotations

from facefleet.link.checks import check_id
from facefleet.link.serde import timestamp
from facefleet.server.domain.devices import Certificate, DeviceAction
from facefleet.server.errors import InvalidArgumentError
from facefleet.server.fleet.device_admin import DeviceView
from facefleet.v1 import admin_pb2, devices_pb2

_STATUSES: dict[str, devices_pb2.DeviceStatus] = {
    "active": devices_pb2.DEVICE_STATUS_ACTIVE,
    "disabled": devices_pb2.DEVICE_STATUS_DISABLED,
    "revoked": devices_pb2.DEVICE_STATUS_REVOKED,
}
_ACTIONS: dict[int, DeviceAction] = {
    admin_pb2.DEVICE_ACTION_DISABLE: "disable",
    admin_pb2.DEVICE_ACTION_ENABLE: "enable",
    admin_pb2.DEVICE_ACTION_REVOKE: "revoke",
}
MAX_DEVICE_IDS = 1000


def status_to_proto(status: str) -> devices_pb2.DeviceStatus:
    return _STATUSES.get(status, devices_pb2.DEVICE_STATUS_UNSPECIFIED)


def device_ids_from_proto(request: admin_pb2.ListDevicesRequest) -> tuple[str, ...]:
    if len(request.device_ids) > MAX_DEVICE_IDS:
        raise InvalidArgumentError(f"device_ids: at most {MAX_DEVICE_IDS}")
    return tuple(check_id("device_ids", d) for d in request.device_ids)


def action_name(request: admin_pb2.ChangeDeviceRequest) -> str:
    """The action a ChangeDevice request names, for the audit log ("change" when it names none)."""
    return _ACTIONS.get(request.action, "change")


def change_from_proto(request: admin_pb2.ChangeDeviceRequest) -> tuple[str, DeviceAction, str, bool]:
    """(device id, action, reason, wipe) of a ChangeDevice request."""
    action = _ACTIONS.get(request.action)
    if action is None:
        raise InvalidArgumentError("action: give DEVICE_ACTION_DISABLE, _ENABLE or _REVOKE")
    return check_id("device_id", request.device_id), action, request.reason, request.wipe


def device_to_proto(view: DeviceView) -> devices_pb2.Device:
    device = view.device
    message = devices_pb2.Device(
        device_id=device.device_id,
        status=status_to_proto(device.status),
        reason=device.reason,
        changed_by=device.changed_by,
        wipe=device.wipe,
        certificates=[_certificate(c) for c in device.certificates],
    )
    for field, moment in (
        ("changed_at", device.changed_at),
        ("wipe_sent_at", device.wipe_sent_at),
        ("certificate_expires", view.certificate_expires_at),
        ("last_seen", view.agent.last_seen if view.agent else None),
    ):
        if moment is not None:
            getattr(message, field).CopyFrom(timestamp(moment))
    return message


def _certificate(c: Certificate) -> devices_pb2.DeviceCertificate:
    message = devices_pb2.DeviceCertificate(
        serial=c.serial,
        not_before=timestamp(c.not_before),
        not_after=timestamp(c.not_after),
        issued_at=timestamp(c.issued_at),
        revoked_reason=c.revoked_reason,
    )
    if c.revoked_at is not None:
        message.revoked_at.CopyFrom(timestamp(c.revoked_at))
    return message


def devices_response(views: list[DeviceView]) -> admin_pb2.ListDevicesResponse:
    return admin_pb2.ListDevicesResponse(devices=[device_to_proto(v) for v in views])


def change_response(view: DeviceView) -> admin_pb2.ChangeDeviceResponse:
    return admin_pb2.ChangeDeviceResponse(device=device_to_proto(view))
