"""Which devices the server admits, as this process sees it: a copy of the state's device records that
`reload()` refreshes whenever the state's devices revision moves (a change made here or by another process
on the same state, e.g. `facefleet-server devices disable`). `admit()` answers from memory, so checking every
call costs a dictionary look-up; the rare writes it implies (a renewal completed, a wipe order delivered)
wait for the next `reload()`, which runs in a worker thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from facefleet.link.checks import utc_now
from facefleet.server.domain.devices import Certificate, Device, DeviceRefusedError, admit
from facefleet.server.state.interface import State

log = logging.getLogger(__name__)


class DeviceRegistry:
    """Admission of devices, answered from memory."""

    def __init__(self, state: State, clock: Callable[[], datetime] = utc_now) -> None:
        self.state = state
        self.clock = clock
        self.revision = -1
        self._devices: dict[str, Device] = {}
        self._lock = threading.Lock()
        self._superseding: dict[str, str] = {}
        self._wipes_told: set[str] = set()

    def reload(self) -> bool:
        """Write what admissions implied, then read the device records again if they changed (blocking).
        True when they changed."""
        with self._lock:
            superseding, self._superseding = self._superseding, {}
            told = [d for d in self._wipes_told if (dev := self._devices.get(d)) and dev.wipe_sent_at is None]
        now = self.clock()
        for device_id, serial in superseding.items():
            revoked = self.state.devices.supersede(device_id, serial, now)
            if revoked:
                log.info(
                    "device %s now uses certificate %s: %d older revoked",
                    device_id,
                    serial,
                    revoked,
                    extra={"device_id": device_id},
                )
        for device_id in told:
            self.state.devices.mark_wipe_sent(device_id, now)
        revision = self.state.devices.devices_revision()
        if revision == self.revision and not told:
            return False
        devices = {device.device_id: device for device in self.state.devices.list_devices()}
        with self._lock:
            self._devices, changed, self.revision = devices, revision != self.revision, revision
        return changed

    def admit(self, device_id: str, serial: str | None) -> Certificate | None:
        """The device's recorded certificate with this serial, or None when admitted without one;
        DeviceRefusedError or CertificateRefusedError (facefleet.server.domain.devices) when refused."""
        device = self._devices.get(device_id)
        try:
            certificate = admit(device, serial)
        except DeviceRefusedError as exc:
            if exc.wipe:
                with self._lock:
                    self._wipes_told.add(device_id)
            raise
        if certificate is not None and device is not None and _older_valid(device, certificate):
            with self._lock:  # the device uses its renewed certificate: the older ones can go
                self._superseding[device_id] = certificate.serial
        return certificate


def _older_valid(device: Device, certificate: Certificate) -> bool:
    return any(
        not c.revoked and c.serial != certificate.serial and c.issued_at <= certificate.issued_at
        for c in device.certificates
    )
