"""Devices as the server admits them: each device's status (active, disabled, revoked), the client
certificates issued to it (by serial), and the rule that decides whether a call from a device with a given
certificate is served.

Serials are the certificate's serial number in lower-case hexadecimal without separators. A device whose
certificates were never recorded (issued before serials were kept) is admitted on its id alone; once the
server has recorded a certificate for a device, only its recorded, unrevoked serials are admitted."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, get_args

from facefleet.server.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError

DeviceStatus = Literal["active", "disabled", "revoked"]
DeviceAction = Literal["disable", "enable", "revoke"]
DEVICE_ACTIONS: tuple[DeviceAction, ...] = get_args(DeviceAction)
MAX_REASON_CHARS = 256


@dataclass(frozen=True)
class Certificate:
    """A client certificate issued to a device. revoked_at: when it stopped being admitted (a revocation, or
    its device's use of a newer certificate after `certs renew`), with why in revoked_reason."""

    serial: str
    device_id: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Device:
    """A device's admission: status with the reason, when and by whom it last changed; wipe: the device is
    told to erase its gallery when it calls (`devices revoke --wipe`), first told at wipe_sent_at."""

    device_id: str
    status: DeviceStatus = "active"
    reason: str = ""
    changed_at: datetime | None = None
    changed_by: str = ""
    wipe: bool = False
    wipe_sent_at: datetime | None = None
    certificates: tuple[Certificate, ...] = ()

    def current_certificate(self) -> Certificate | None:
        """The newest unrevoked certificate (None when there is none)."""
        valid = [c for c in self.certificates if not c.revoked]
        return max(valid, key=lambda c: (c.issued_at, c.serial)) if valid else None

    def changed(self, action: DeviceAction, reason: str, who: str, now: datetime, *, wipe: bool) -> Device:
        """The device after an operator's action; InvalidArgumentError when the action does not apply."""
        reason = check_reason(reason)
        if action == "enable":
            if self.status == "revoked":
                raise InvalidArgumentError(
                    f"device {self.device_id!r} is revoked and stays so; give it a new certificate with "
                    f"`facefleet-server certs issue {self.device_id}` to admit it again"
                )
            return replace(self, status="active", reason=reason, changed_at=now, changed_by=who, wipe=False)
        if action == "disable":
            if self.status == "revoked":
                raise InvalidArgumentError(f"device {self.device_id!r} is already revoked")
            if wipe:
                raise InvalidArgumentError("--wipe goes with revoke, not disable")
            return replace(self, status="disabled", reason=reason, changed_at=now, changed_by=who)
        return replace(
            self,
            status="revoked",
            reason=reason,
            changed_at=now,
            changed_by=who,
            wipe=wipe or self.wipe,
            certificates=tuple(
                c if c.revoked else replace(c, revoked_at=now, revoked_reason="device revoked")
                for c in self.certificates
            ),
        )


class DeviceRefusedError(PermissionDeniedError):
    """A call from a disabled or revoked device. wipe: the device must erase its gallery."""

    def __init__(self, message: str, *, wipe: bool = False) -> None:
        super().__init__(message)
        self.wipe = wipe


class CertificateRefusedError(UnauthenticatedError):
    """A call with a certificate the server revoked or never issued to that device."""


def admit(device: Device | None, serial: str | None) -> Certificate | None:
    """Whether a call from `device` (None: no record, so active) presenting the certificate `serial` (None:
    unknown, e.g. insecure development mode) is served: the matching recorded certificate, or None when
    admitted without one; DeviceRefusedError or CertificateRefusedError when refused."""
    if device is None:
        return None
    if device.status != "active":
        why = f" ({device.reason})" if device.reason else ""
        if device.status == "disabled":
            fix = f"`facefleet-server devices enable {device.device_id}` admits it again"
        else:
            fix = f"a new certificate from `facefleet-server certs issue {device.device_id}` admits it again"
        raise DeviceRefusedError(
            f"device {device.device_id!r} is {device.status}{why}; {fix}", wipe=device.wipe
        )
    if serial is None or not device.certificates:
        return None
    for certificate in device.certificates:
        if certificate.serial == serial:
            if certificate.revoked:
                raise CertificateRefusedError(
                    f"certificate {serial} of device {device.device_id!r} is revoked "
                    f"({certificate.revoked_reason}); install the device's current certificate"
                )
            return certificate
    raise CertificateRefusedError(
        f"certificate {serial} was not issued to device {device.device_id!r} by this server; "
        f"issue one with `facefleet-server certs issue {device.device_id}`"
    )


def check_reason(reason: str) -> str:
    """An operator's reason: printable, at most MAX_REASON_CHARS."""
    if len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise InvalidArgumentError(
            f"reason {reason[:80]!r}: give at most {MAX_REASON_CHARS} printable characters"
        )
    return reason
