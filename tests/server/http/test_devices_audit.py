"""/api/devices and /api/audit over HTTPS: a device disabled through the HTTP API is refused by FleetService
at once and admitted again when enabled; a revoke with wipe is kept; every change is in the admin audit
log, which pages like the gRPC one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import fleet_pb2
from tests.server.conftest import Pki, run, serving
from tests.server.http.clients import client, problem


def test_devices_are_listed_disabled_enabled_and_revoked_with_wipe(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            fleet = await harness.registered("door-1")
            await harness.registered("door-2")
            listed = (await http.get("/api/devices")).json()["devices"]
            disabled = await http.post("/api/devices/door-1/disable", json={"reason": "on the bench"})
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await fleet.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="test"))
            enabled = await http.post("/api/devices/door-1/enable")
            await fleet.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="test"))
            revoked = await http.post("/api/devices/door-2/revoke", json={"reason": "stolen", "wipe": True})
            return {
                "listed": listed,
                "disabled": disabled.json(),
                "refused": refused.value,
                "enabled": enabled.json(),
                "revoked": revoked.json(),
                "one": (await http.get("/api/devices", params={"device_id": "door-2"})).json()["devices"],
                "again": problem(await http.post("/api/devices/door-2/enable"), 400, "INVALID_ARGUMENT"),
                "nobody": problem(await http.post("/api/devices/nobody/disable"), 404, "NOT_FOUND"),
                "bad_action": problem(
                    await http.post("/api/devices/door-1/explode"), 400, "INVALID_ARGUMENT"
                ),
                "wipe_on_disable": problem(
                    await http.post("/api/devices/door-1/disable", json={"wipe": True}),
                    400,
                    "INVALID_ARGUMENT",
                ),
            }

    r = run(scenario)
    assert [(d["device_id"], d["status"]) for d in r["listed"]] == [
        ("door-1", "active"),
        ("door-2", "active"),
    ]
    assert all(d["last_seen"] for d in r["listed"])
    assert (r["disabled"]["status"], r["disabled"]["reason"], r["disabled"]["changed_by"]) == (
        "disabled",
        "on the bench",
        "admin",
    )
    assert r["refused"].code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is disabled (on the bench)" in (r["refused"].details() or "")
    assert r["enabled"]["status"] == "active"
    assert (r["revoked"]["status"], r["revoked"]["wipe"]) == ("revoked", True)
    assert [(d["device_id"], d["status"]) for d in r["one"]] == [("door-2", "revoked")]
    assert "is revoked and stays so" in r["again"]["detail"]


def test_the_audit_log_records_http_changes_and_pages(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            await harness.registered("door-1")
            async with client(harness) as http:
                for action in ("disable", "enable", "disable", "enable"):
                    await http.post(f"/api/devices/door-1/{action}")
                await http.post("/api/devices/door-1/revoke", json={"wipe": True, "reason": "x" * 300})
                pages = [(await http.get("/api/audit", params={"page_size": 2})).json()]
                while pages[-1]["next_page_token"]:
                    params = {"page_size": 2, "page_token": pages[-1]["next_page_token"]}
                    pages.append((await http.get("/api/audit", params=params)).json())
                only_enable = await http.get("/api/audit", params={"action_prefix": "devices.enable"})
                by_nobody = await http.get("/api/audit", params={"who": "nobody"})
                foreign_token = await http.get("/api/audit", params={"page_token": "eHl6"})
            async with client(harness, harness.query_token) as dashboard:
                denied = await dashboard.get("/api/audit")
            return {
                "pages": pages,
                "only_enable": only_enable.json()["entries"],
                "by_nobody": by_nobody.json()["entries"],
                "foreign_token": problem(foreign_token, 400, "INVALID_ARGUMENT"),
                "denied": problem(denied, 403, "PERMISSION_DENIED"),
            }

    r = run(scenario)
    entries = [e for page in r["pages"] for e in page["entries"]]
    assert len(r["pages"]) == 3
    assert [(e["who"], e["action"], e["target"], e["outcome"]) for e in reversed(entries)] == [
        ("admin", "devices.disable", "door-1", "ok"),
        ("admin", "devices.enable", "door-1", "ok"),
        ("admin", "devices.disable", "door-1", "ok"),
        ("admin", "devices.enable", "door-1", "ok"),
        ("admin", "devices.revoke", "door-1", "INVALID_ARGUMENT"),
    ]
    assert "256 printable characters" in entries[0]["detail"]
    assert [e["action"] for e in r["only_enable"]] == ["devices.enable", "devices.enable"]
    assert r["by_nobody"] == []
