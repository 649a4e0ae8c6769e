"""Events a real server refuses for their time, as an agent whose wall clock is off stamps them (a box without
a real-time clock booted offline, or a clock ahead that NTP later steps back): the agent drops them from its
queue but counts them in its store, in the same transaction, and shows the count in its status, its health
and its metrics, with a warning that names the clock and the fix until the server takes a report again."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from facefleet.agent.config import AgentConfig
from facefleet.agent.service.loop import AgentService
from facefleet.link.events import Event
from facefleet.link.fleet import refused_for_time
from facefleet.server.fleet.link import FleetSettings, refusal
from facefleet.server.gallery.embedder import Enroller
from facefleet.vision.models.store import ModelStore
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.fleet.test_agent_sync import access_payload, health, open_store, until

DAY = 86400.0


def without_cameras(harness: Harness) -> AgentConfig:
    """An agent reporting to the harness's server, with no camera and no broker."""
    return AgentConfig.model_validate(
        {
            "device_id": "door-1",
            "mqtt": {"enabled": False},
            "service": {"status_interval_s": 1},
            "server": harness.agent_server_section("door-1"),
        }
    )


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(-400 * DAY, "older than the 365 days"), (2 * DAY, "ahead of the server's clock")],
    ids=["400-days-old", "2-days-ahead"],
)
def test_an_event_the_server_refuses_for_its_time_is_counted_for_good_and_the_clock_is_warned_of(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    model_store: ModelStore,
    model_cache: Path,
    offset: float,
    reason: str,
) -> None:
    state = tmp_path / "agent-state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            service = await asyncio.to_thread(AgentService, without_cameras(harness), state)
            seen: dict[str, Any] = {}
            try:
                sync = service.sync
                assert sync is not None
                sync.start()
                try:
                    await until(lambda: sync.connected, what="the agent registered")
                    assert sync.submit(access_payload("door-1", time.time() + offset))  # the clock was off
                    await until(lambda: sync.refused == 1 and service.store.reports.count() == 0)
                    await until(
                        lambda: health(harness, "door-1").get("reports_refused") == 1.0,
                        what="the count in the health figures the server keeps",
                    )
                    seen["status"], seen["figures"] = service.status(), service.figures()
                    seen["health"] = health(harness, "door-1")
                    registry = service.metrics.registry
                    seen["metrics"] = (
                        registry.get_sample_value("facefleet_agent_reports_refused_total"),
                        registry.get_sample_value("facefleet_agent_clock_implausible"),
                    )
                    assert sync.submit(access_payload("door-1", time.time()))  # the clock was set: taken
                    await until(lambda: sync.reported == 1 and service.store.reports.count() == 0)
                    seen["after"] = service.status(), service.figures()
                finally:
                    await asyncio.to_thread(sync.stop)
            finally:
                service.store.close()
        with open_store(state / "agent.db") as store:
            seen["reopened"] = store.reports.refused(), store.reports.count()
        return seen

    seen = run(scenario)
    assert seen["reopened"] == (1, 0)  # durable: the refused event left the queue and was counted
    status = seen["status"]
    assert (status["server"]["reports_refused"], status["server"]["reports_pending"]) == (1, 0)
    (warning,) = status["warnings"]
    assert warning.startswith("the server refuses events for their time (event time ")
    assert reason in warning
    assert warning.endswith(
        "the wall clock is off and those events are dropped; set the clock (NTP: chrony or systemd-timesyncd)"
    )
    assert (seen["figures"].reports_refused, seen["figures"].clock_implausible) == (1, True)
    assert (seen["health"]["reports_refused"], seen["health"]["clock_implausible"]) == (1.0, 1.0)
    assert seen["metrics"] == (1.0, 1.0)
    after, figures = seen["after"]
    assert (after["warnings"], figures.clock_implausible) == ([], False)  # the server took a report again
    assert (after["server"]["reports_refused"], figures.reports_refused) == (1, 1)


def test_the_agent_recognises_the_servers_refusals_for_time_and_only_those() -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=timezone.utc)
    settings = FleetSettings()

    def refused(event_id: str, when: datetime) -> str | None:
        return refusal(Event(event_id, "door-1", when, "access", "denied", door="main"), now, settings)

    uuid = "0b7c9a52-8f0e-4c1e-9d9b-2b6a1f3e4d5c"
    ahead, old = refused(uuid, now + timedelta(days=2)), refused(uuid, now - timedelta(days=400))
    not_uuid = refused("not-a-uuid", now)
    assert ahead is not None and old is not None and not_uuid is not None
    assert refused_for_time(ahead) and refused_for_time(old)
    assert not refused_for_time(not_uuid)
    assert refused(uuid, now) is None
