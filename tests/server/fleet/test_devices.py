"""Device lifecycle against a real server (mutual TLS on port 0, real SQLite): certificates recorded by
serial, devices disabled, enabled and revoked through AdminService and the local state, open streams ended at
once, renewed certificates superseding the old ones."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from facefleet.link.checks import utc_now
from facefleet.server.api import certs
from facefleet.server.domain.audit import AuditFilter
from facefleet.server.domain.queries import EPOCH
from facefleet.server.fleet.device_admin import change_device, record_certificate
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.state.sqlite.state import SqliteState
from facefleet.v1 import admin_pb2, devices_pb2, fleet_pb2, query_pb2
from tests.server.conftest import Harness, Pki, next_update, run, serving

STREAM_END_S = 5.0
"""Upper bound for waiting on a stream the server should end at once (guards against a hung test)."""


def issue(harness: Harness, out: Path, device: str, **kwargs: Any) -> certs.Issued:
    """A certificate for `device` in out/devices, recorded in the server's state as `certs issue` does."""
    issued = certs.issue_device(harness.pki.tls_dir, device, out_dir=out / "devices", **kwargs)
    assert issued.not_before is not None
    assert issued.not_after is not None
    record_certificate(
        harness.server.state, device, issued.serial, issued.not_before, issued.not_after, "local", utc_now()
    )
    return issued


async def register(harness: Harness, device: str, tls_dir: Path | None = None) -> Any:
    stub = harness.fleet(device, tls_dir=tls_dir)
    await stub.Register(fleet_pb2.RegisterRequest(device_id=device, agent_version="test"))
    return stub


async def change(harness: Harness, device: str, action: int, **kwargs: Any) -> devices_pb2.Device:
    response = await harness.admin().ChangeDevice(
        admin_pb2.ChangeDeviceRequest(device_id=device, action=action, **kwargs), metadata=harness.admin_md
    )
    return response.device


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def stream_end(stream: Any) -> tuple[grpc.aio.AioRpcError, float]:
    """The error that ends a Watch stream, and how long after the call it came (s)."""
    start = time.monotonic()
    try:
        while True:
            message = await asyncio.wait_for(stream.read(), STREAM_END_S)
            assert message is not grpc.aio.EOF, "the stream ended without a status"
    except grpc.aio.AioRpcError as error:
        return error, time.monotonic() - start


def test_a_disabled_device_is_refused_on_every_call_and_its_open_stream_ends(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            stub = await harness.registered("door-1")
            other = await harness.registered("door-2")
            stream = stub.Watch(fleet_pb2.WatchRequest(device_id="door-1"))
            kept = other.Watch(fleet_pb2.WatchRequest(device_id="door-2"))
            await next_update(stream)
            await next_update(kept)

            device = await change(harness, "door-1", admin_pb2.DEVICE_ACTION_DISABLE, reason="left the site")
            assert (device.status, device.reason, device.changed_by) == (
                devices_pb2.DEVICE_STATUS_DISABLED,
                "left the site",
                "admin",
            )
            error, elapsed = await stream_end(stream)
            print(f"ChangeDevice answered → the device's Watch stream ended: {elapsed * 1000:.0f} ms")
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "door-1" in (error.details() or "") and "disabled (left the site)" in (
                error.details() or ""
            )
            for call in (
                stub.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="test")),
                stub.AckGallery(fleet_pb2.AckGalleryRequest(device_id="door-1", gallery_revision=0)),
                stub.ReportResults(fleet_pb2.ReportResultsRequest(device_id="door-1")),
                stub.ReportModelStatus(fleet_pb2.ReportModelStatusRequest(device_id="door-1")),
            ):
                assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED
            download = stub.DownloadModel(fleet_pb2.DownloadModelRequest(device_id="door-1", model_id="x@1"))
            assert (await refused(download.read())).code() == grpc.StatusCode.PERMISSION_DENIED
            # the other device's stream is untouched: a heartbeat-free wait shows no error
            assert (await other.AckGallery(fleet_pb2.AckGalleryRequest(device_id="door-2"))) is not None

            await change(harness, "door-1", admin_pb2.DEVICE_ACTION_ENABLE, reason="back")
            await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="test"))
            await next_update(stub.Watch(fleet_pb2.WatchRequest(device_id="door-1")))

            audit = harness.server.state.list_audit(AuditFilter(EPOCH, utc_now()), None, 10).entries
            assert [(e.who, e.action, e.target, e.outcome) for e in audit][:2] == [
                ("admin", "devices.enable", "door-1", "ok"),
                ("admin", "devices.disable", "door-1", "ok"),
            ]

    run(scenario)


def test_a_device_disabled_from_the_command_line_is_refused_by_the_running_server(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, fleet={"poll_seconds": 0.2}) as harness:
            stub = await harness.registered("lobby")
            stream = stub.Watch(fleet_pb2.WatchRequest(device_id="lobby"))
            await next_update(stream)
            other_process = SqliteState(harness.server.paths.database)  # as `devices disable` opens it
            try:
                change_device(other_process, "lobby", "disable", reason="", who="local", now=utc_now())
            finally:
                other_process.close()
            error, _ = await stream_end(stream)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    run(scenario)


def test_revoking_refuses_every_certificate_until_a_new_one_is_issued(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            first = tmp_path / "first"
            issue(harness, first, "door-9")
            stub = await register(harness, "door-9", first)
            device = await change(harness, "door-9", admin_pb2.DEVICE_ACTION_REVOKE, reason="stolen")
            assert device.status == devices_pb2.DEVICE_STATUS_REVOKED
            assert [c.revoked_reason for c in device.certificates] == ["device revoked"]
            error = await refused(stub.Register(fleet_pb2.RegisterRequest(device_id="door-9")))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "revoked (stolen)" in (error.details() or "")
            assert "facefleet-device-action" not in dict(error.trailing_metadata() or ())

            enable = await refused(change(harness, "door-9", admin_pb2.DEVICE_ACTION_ENABLE))
            assert enable.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "certs issue door-9" in (enable.details() or "")

            second = tmp_path / "second"
            issued = issue(harness, second, "door-9")
            await harness.server.refresh()
            await register(harness, "door-9", second)
            old = await refused(register(harness, "door-9", first))
            assert old.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "is revoked" in (old.details() or "")
            listed = await harness.admin().ListDevices(
                admin_pb2.ListDevicesRequest(device_ids=["door-9"]), metadata=harness.admin_md
            )
            (door,) = listed.devices
            assert door.status == devices_pb2.DEVICE_STATUS_ACTIVE
            assert [c.serial for c in door.certificates if not c.HasField("revoked_at")] == [issued.serial]

    run(scenario)


def test_a_renewed_certificate_supersedes_the_old_one_once_the_device_uses_it(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            old, new = tmp_path / "old", tmp_path / "new"
            issue(harness, old, "gate")
            await register(harness, "gate", old)
            issue(harness, new, "gate")
            await harness.server.refresh()
            await register(harness, "gate", old)  # not installed yet: the old one still works
            await register(harness, "gate", new)
            await harness.server.refresh()  # writes what the call implied
            error = await refused(register(harness, "gate", old))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "superseded by" in (error.details() or "")
            await register(harness, "gate", new)

    run(scenario)


def test_a_certificate_the_server_did_not_record_is_refused_for_a_device_with_recorded_ones(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            issue(harness, tmp_path / "recorded", "kiosk")
            unrecorded = tmp_path / "unrecorded"
            certs.issue_device(pki.tls_dir, "kiosk", out_dir=unrecorded / "devices")  # signed, not recorded
            await harness.server.refresh()
            await register(harness, "kiosk", tmp_path / "recorded")
            error = await refused(register(harness, "kiosk", unrecorded))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "was not issued to device 'kiosk' by this server" in (error.details() or "")

    run(scenario)


def test_device_changes_are_checked(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            await harness.registered("door-1")
            cases = (
                (dict(device_id="nobody", action=admin_pb2.DEVICE_ACTION_DISABLE), grpc.StatusCode.NOT_FOUND),
                (dict(device_id="door-1"), grpc.StatusCode.INVALID_ARGUMENT),
                (
                    dict(device_id="../x", action=admin_pb2.DEVICE_ACTION_DISABLE),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    dict(device_id="door-1", action=admin_pb2.DEVICE_ACTION_DISABLE, wipe=True),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    dict(device_id="door-1", action=admin_pb2.DEVICE_ACTION_DISABLE, reason="x" * 300),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            )
            for fields, code in cases:
                error = await refused(
                    harness.admin().ChangeDevice(
                        admin_pb2.ChangeDeviceRequest(**fields), metadata=harness.admin_md
                    )
                )
                assert error.code() == code, fields
            query = await refused(
                harness.admin().ChangeDevice(
                    admin_pb2.ChangeDeviceRequest(device_id="door-1", action=admin_pb2.DEVICE_ACTION_DISABLE),
                    metadata=harness.query_md,
                )
            )
            assert query.code() == grpc.StatusCode.PERMISSION_DENIED
            listed = await harness.admin().ListDevices(
                admin_pb2.ListDevicesRequest(), metadata=harness.admin_md
            )
            assert [(d.device_id, d.status) for d in listed.devices] == [
                ("door-1", devices_pb2.DEVICE_STATUS_ACTIVE)
            ]

    run(scenario)


def test_fleet_status_shows_the_device_status_and_the_certificate_expiry_from_health(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness:
            stub = await harness.registered("door-2")
            expires = 1_900_000_000.0
            await stub.ReportResults(
                fleet_pb2.ReportResultsRequest(device_id="door-2", health={"certificate_expires_at": expires})
            )
            await change(harness, "door-2", admin_pb2.DEVICE_ACTION_DISABLE)
            status = await harness.query().FleetStatus(
                query_pb2.FleetStatusRequest(), metadata=harness.query_md
            )
            (agent,) = status.agents
            assert agent.device_status == devices_pb2.DEVICE_STATUS_DISABLED
            assert agent.certificate_expires.seconds == int(expires)

    run(scenario)
