"""Devices and their certificates in the server's SQLite database (facefleet.server.state.devices), in
SqliteState's transactions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from facefleet.server.domain.devices import Certificate, Device
from facefleet.server.domain.queries import from_us, to_us
from facefleet.server.errors import NotFoundError
from facefleet.server.state.devices import DeviceState
from facefleet.server.state.sql.meta import Connection, Transactions, bump, counter

_REVISION_KEY = "devices_revision"
_DEVICE_COLUMNS = "device_id, status, reason, changed_us, changed_by, wipe, wipe_sent_us"
_CERT_COLUMNS = "serial, device_id, not_before_us, not_after_us, issued_us, revoked_us, revoked_reason"


class SqlDeviceState(DeviceState):
    """Devices in the server's SQLite database."""

    def __init__(self, core: Transactions) -> None:
        self._core = core

    def devices_revision(self) -> int:
        with self._core.connection() as conn:
            return counter(conn, _REVISION_KEY)

    def list_devices(self, device_ids: Sequence[str] = ()) -> list[Device]:
        with self._core.read() as conn:
            return _load(conn, tuple(device_ids) or None)

    def get_device(self, device_id: str) -> Device | None:
        with self._core.read() as conn:
            found = _load(conn, (device_id,))
        return found[0] if found else None

    def change_device(self, device_id: str, change: Callable[[Device], Device]) -> Device:
        with self._core.write() as conn:
            found = _load(conn, (device_id,))
            if (
                not found
                and not conn.execute("SELECT 1 FROM agents WHERE device_id = ?", (device_id,)).fetchone()
            ):
                raise NotFoundError(
                    f"no device {device_id!r}: it has neither registered nor been issued a certificate; "
                    "`facefleet-server devices list` shows the devices"
                )
            before = found[0] if found else Device(device_id)
            after = change(before)
            _write(conn, after)
            bump(conn, _REVISION_KEY)
            return after

    def add_certificate(self, certificate: Certificate, who: str) -> Device:
        with self._core.write() as conn:
            found = _load(conn, (certificate.device_id,))
            device = found[0] if found else Device(certificate.device_id)
            if device.status == "revoked":
                device = replace(
                    device,
                    status="active",
                    reason=f"new certificate {certificate.serial}",
                    changed_at=certificate.issued_at,
                    changed_by=who,
                    wipe=False,
                    wipe_sent_at=None,
                )
            device = replace(device, certificates=(*device.certificates, certificate))
            _write(conn, device)
            bump(conn, _REVISION_KEY)
            return device

    def supersede(self, device_id: str, serial: str, now: datetime) -> int:
        with self._core.write() as conn:
            row = conn.execute(
                "SELECT issued_us FROM device_certificates WHERE serial = ? AND device_id = ?",
                (serial, device_id),
            ).fetchone()
            if row is None:
                return 0
            revoked = conn.execute(
                "UPDATE device_certificates SET revoked_us = ?, revoked_reason = ? "
                "WHERE device_id = ? AND revoked_us IS NULL AND serial != ? AND issued_us <= ?",
                (to_us(now), f"superseded by {serial}", device_id, serial, row[0]),
            ).rowcount
            if revoked:
                bump(conn, _REVISION_KEY)
            return int(revoked)

    def mark_wipe_sent(self, device_id: str, now: datetime) -> None:
        with self._core.write() as conn:
            conn.execute(
                "UPDATE devices SET wipe_sent_us = ? WHERE device_id = ? AND wipe_sent_us IS NULL",
                (to_us(now), device_id),
            )


def _load(conn: Connection, device_ids: tuple[str, ...] | None) -> list[Device]:
    where, params = "", tuple[str, ...]()
    if device_ids is not None:
        where, params = f"WHERE device_id IN ({', '.join('?' * len(device_ids))})", device_ids
    devices = {
        row[0]: _device(row)
        for row in conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices {where}", params).fetchall()  # noqa: S608
    }
    certificates: dict[str, list[Certificate]] = {}
    for row in conn.execute(
        f"SELECT {_CERT_COLUMNS} FROM device_certificates {where} ORDER BY issued_us, serial",  # noqa: S608
        params,
    ).fetchall():
        certificates.setdefault(row[1], []).append(_certificate(row))
    for device_id, certs in certificates.items():
        devices[device_id] = replace(devices.get(device_id) or Device(device_id), certificates=tuple(certs))
    return [devices[device_id] for device_id in sorted(devices)]


def _write(conn: Connection, device: Device) -> None:
    conn.execute(
        f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
        "ON CONFLICT (device_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, "
        "changed_us = excluded.changed_us, changed_by = excluded.changed_by, wipe = excluded.wipe, "
        "wipe_sent_us = excluded.wipe_sent_us",
        (
            device.device_id,
            device.status,
            device.reason,
            None if device.changed_at is None else to_us(device.changed_at),
            device.changed_by,
            int(device.wipe),
            None if device.wipe_sent_at is None else to_us(device.wipe_sent_at),
        ),
    )
    for c in device.certificates:
        conn.execute(
            f"INSERT INTO device_certificates ({_CERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT (serial) DO UPDATE SET revoked_us = excluded.revoked_us, "
            "revoked_reason = excluded.revoked_reason",
            (
                c.serial,
                c.device_id,
                to_us(c.not_before),
                to_us(c.not_after),
                to_us(c.issued_at),
                None if c.revoked_at is None else to_us(c.revoked_at),
                c.revoked_reason,
            ),
        )


def _device(row: tuple[object, ...]) -> Device:
    device_id, status, reason, changed_us, changed_by, wipe, wipe_sent_us = row
    assert status in ("active", "disabled", "revoked")
    return Device(
        device_id=str(device_id),
        status=status,
        reason=str(reason),
        changed_at=None if changed_us is None else from_us(int(str(changed_us))),
        changed_by=str(changed_by),
        wipe=bool(wipe),
        wipe_sent_at=None if wipe_sent_us is None else from_us(int(str(wipe_sent_us))),
    )


def _certificate(row: tuple[object, ...]) -> Certificate:
    serial, device_id, not_before_us, not_after_us, issued_us, revoked_us, revoked_reason = row
    return Certificate(
        serial=str(serial),
        device_id=str(device_id),
        not_before=from_us(int(str(not_before_us))),
        not_after=from_us(int(str(not_after_us))),
        issued_at=from_us(int(str(issued_us))),
        revoked_at=None if revoked_us is None else from_us(int(str(revoked_us))),
        revoked_reason=str(revoked_reason),
    )
