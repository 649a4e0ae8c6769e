"""A lost or stolen box: `devices revoke --wipe` makes the agent's sync client (real FleetSync, real stores on
both sides) erase its gallery the next time it calls, and the agent reports its certificate's expiry."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from cryptography import x509

from facefleet.agent.domain.fleet import CERTIFICATE_EXPIRY_HEALTH
from facefleet.agent.store.database import EmbeddingStore
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, devices_pb2
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.fleet.test_agent_sync import (
    enrol,
    health,
    open_store,
    settings,
    syncing,
    until,
    vector_person,
)


def test_revoke_with_wipe_erases_the_agents_gallery_and_the_server_records_the_order(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    store_path = tmp_path / "agent.db"

    async def scenario() -> tuple[int, int, devices_pb2.Device]:
        async with serving(tmp_path, pki, enroller) as harness:
            for number, person in enumerate(("ann", "bob", "cyd")):
                await enrol(harness, vector_person(person, number))
            with open_store(store_path) as store:
                async with syncing(settings(harness, pki, "door-2"), store) as sync:
                    await until(lambda: len(store.gallery.people()) == 3, what="the gallery on the agent")
                    before = len(store.gallery.people())
                    await harness.admin().ChangeDevice(
                        admin_pb2.ChangeDeviceRequest(
                            device_id="door-2",
                            action=admin_pb2.DEVICE_ACTION_REVOKE,
                            reason="stolen",
                            wipe=True,
                        ),
                        metadata=harness.admin_md,
                    )
                    await until(lambda: sync.wiped_at is not None, what="the agent erasing its gallery")
                    after = len(store.gallery.people())
                    assert store.sync.point().revision == 0
                    assert "revoked (stolen)" in (sync.status()["last_error"] or "")
            await until(
                lambda: harness.server.state.devices.get_device("door-2").wipe_sent_at,  # type: ignore[union-attr]
                what="the server recording the order as sent",
            )
            listed = await harness.admin().ListDevices(
                admin_pb2.ListDevicesRequest(device_ids=["door-2"]), metadata=harness.admin_md
            )
            return before, after, listed.devices[0]

    before, after, device = run(scenario)
    assert (before, after) == (3, 0)
    assert device.status == devices_pb2.DEVICE_STATUS_REVOKED
    assert device.wipe
    assert device.HasField("wipe_sent_at")
    with sqlite3.connect(store_path) as conn:  # nothing left of the embeddings in the file
        assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone() == (0,)
        assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
    conn.close()
    vector = np.random.default_rng(0).normal(size=128).astype("<f4")
    vector /= np.linalg.norm(vector)
    raw = store_path.read_bytes() + (
        store_path.with_name("agent.db-wal").read_bytes()
        if store_path.with_name("agent.db-wal").exists()
        else b""
    )
    assert vector.astype("<f4").tobytes()[:32] not in raw  # ann's embedding is gone from the disk image


async def revoke_with_wipe(harness: Harness, device: str) -> None:
    await harness.admin().ChangeDevice(
        admin_pb2.ChangeDeviceRequest(
            device_id=device, action=admin_pb2.DEVICE_ACTION_REVOKE, reason="stolen", wipe=True
        ),
        metadata=harness.admin_md,
    )


def test_a_wipe_that_meets_a_busy_store_is_tried_again_and_the_sync_goes_on(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    """Another process holds the store's write lock when the order arrives: the agent says the gallery is
    not erased yet, keeps its sync thread, and erases it at a later refusal once the store is free."""
    store_path = tmp_path / "agent.db"

    async def scenario() -> tuple[str, int, bool]:
        async with serving(tmp_path, pki, enroller) as harness:
            for number, person in enumerate(("ann", "bob")):
                await enrol(harness, vector_person(person, number))
            with EmbeddingStore(store_path, busy_timeout_ms=200) as store:
                async with syncing(settings(harness, pki, "door-2"), store) as sync:
                    await until(lambda: len(store.gallery.people()) == 2, what="the gallery on the agent")
                    store.audit.append("front", "granted", person_id="ann", score=0.93)
                    other = sqlite3.connect(store_path, isolation_level=None)  # `enroll` at work, say
                    other.execute("BEGIN IMMEDIATE")
                    try:
                        await revoke_with_wipe(harness, "door-2")
                        failure = await until(
                            lambda: "NOT erased" in (sync.last_error or "") and sync.last_error,
                            what="the agent saying the gallery is not erased yet",
                        )
                        assert sync.running and sync.wiped_at is None
                        assert len(store.gallery.people()) == 2
                    finally:
                        other.execute("ROLLBACK")
                        other.close()
                    await until(lambda: sync.wiped_at is not None, what="the wipe tried again")
                    left = len(store.gallery.people()) + len(store.audit.entries())
                    return failure, left, sync.running

    failure, left, running = run(scenario)
    assert "busy" in failure and "trying again" in failure
    assert (left, running) == (0, True)  # the people, and the audit entry that named one of them


def test_the_agent_reports_when_its_certificate_expires(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> dict[str, float]:
        async with serving(tmp_path, pki, enroller) as harness:
            with open_store(tmp_path / "agent.db") as store:
                async with syncing(settings(harness, pki, "lobby"), store):
                    return await until(
                        lambda: (
                            health(harness, "lobby").get(CERTIFICATE_EXPIRY_HEALTH)
                            and health(harness, "lobby")
                        ),
                        what="a report with health figures",
                    )

    figures = run(scenario)
    certificate = x509.load_pem_x509_certificate(pki.device("lobby").cert.read_bytes())
    assert (
        datetime.fromtimestamp(figures[CERTIFICATE_EXPIRY_HEALTH], timezone.utc)
        == certificate.not_valid_after_utc
    )
