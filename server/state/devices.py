"""The server's durable record of devices behind one interface: each device's status and the client
certificates issued to it (facefleet.server.domain.devices).

Every change that can alter whether a device is admitted bumps `devices_revision()` in the same transaction,
so a server process polling it notices a change another process (the CLI) made. All methods are blocking,
one transaction each; they raise NotFoundError, InvalidArgumentError or StateError."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import datetime

from facefleet.server.domain.devices import Certificate, Device


class DeviceState(abc.ABC):
    @abc.abstractmethod
    def devices_revision(self) -> int:
        """A counter that moves with every change of a device's admission (0 before the first)."""

    @abc.abstractmethod
    def list_devices(self, device_ids: Sequence[str] = ()) -> list[Device]:
        """Devices with a record (a status change or a certificate), by id; all when device_ids is empty."""

    @abc.abstractmethod
    def get_device(self, device_id: str) -> Device | None: ...

    @abc.abstractmethod
    def change_device(self, device_id: str, change: Callable[[Device], Device]) -> Device:
        """Apply `change` to the device's record (an active device without certificates when it has none)
        and store the result; NotFoundError for a device the server has never registered nor issued a
        certificate to."""

    @abc.abstractmethod
    def add_certificate(self, certificate: Certificate, who: str) -> Device:
        """Record a certificate issued to its device. A revoked device is admitted again with it (its
        earlier certificates stay revoked); a disabled one stays disabled."""

    @abc.abstractmethod
    def supersede(self, device_id: str, serial: str, now: datetime) -> int:
        """The device has called with certificate `serial`: revoke its unrevoked certificates issued
        before that one (a renewal completed). The number revoked."""

    @abc.abstractmethod
    def mark_wipe_sent(self, device_id: str, now: datetime) -> None:
        """The device has been told to erase its gallery (kept: the first time)."""
