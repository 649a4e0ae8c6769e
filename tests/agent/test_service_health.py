"""The agent's health figures for the fleet dashboard: the totals, the report queue and each camera's own,
within what the server accepts however many cameras there are."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from facefleet.agent.cameras import Camera, CameraSettings, SourceError
from facefleet.agent.config import CameraConfig, load_config
from facefleet.agent.domain.fleet import SYNC_HEALTH
from facefleet.agent.domain.records import StoreCorruptError, StoreError
from facefleet.agent.service.loop import AgentService
from facefleet.agent.service.reports import CAMERA_HEALTH
from facefleet.link.checks import MAX_HEALTH_ENTRIES, MAX_HEALTH_KEY_CHARS, check_health
from facefleet.link.events import Event
from facefleet.server.api import certs
from facefleet.vision.models.store import ModelStore

EXPIRY = "facefleet_agent_certificate_expiry_seconds"


def configured(tmp_path: Path, model_store: ModelStore, model_cache: Path, config_text: str) -> AgentService:
    """A service (not running, so nothing connects) of this config, on the session's models."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    (state / "cache").symlink_to(model_cache, target_is_directory=True)
    config = tmp_path / "agent.toml"
    config.write_text(config_text)
    return AgentService(load_config(config), state)


def agent(tmp_path: Path, model_store: ModelStore, model_cache: Path, cameras: list[str]) -> AgentService:
    """A service (not running) with these cameras, on the session's models, without broker or server."""
    return configured(
        tmp_path,
        model_store,
        model_cache,
        'device_id = "door-box"\n[mqtt]\nenabled = false\n'
        + "".join(f'[[cameras]]\nname = "{name}"\nsource = "{tmp_path}"\n' for name in cameras),
    )


class Stalled:
    """A source that gives a few frames and then waits (the camera stays running) until released."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.release = threading.Event()

    def read(self) -> np.ndarray | None:
        if self.frames > 0:
            self.frames -= 1
            return np.zeros((8, 8, 3), np.uint8)
        self.release.wait(10)
        return None

    def close(self) -> None:
        pass


def broken(settings: CameraSettings) -> Stalled:
    raise SourceError(f"{settings.source}: no such device")


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_health_names_each_camera_and_the_report_queue(
    tmp_path: Path, model_store: ModelStore, model_cache: Path
) -> None:
    service = agent(tmp_path, model_store, model_cache, ["porch", "gate"])
    source = Stalled(frames=5)
    porch = Camera(CameraSettings("porch", "fake://porch"), opener=lambda _: source)
    gate = Camera(CameraSettings("gate", "/dev/video9", backoff_initial_s=60), opener=broken)
    service.cameras = {"porch": porch, "gate": gate}
    for event_number in range(3):
        event = Event(
            str(uuid.UUID(int=event_number)), "door-box", datetime.now(timezone.utc), "face", "unknown"
        )
        assert service.store.reports.put(event)
    porch.start()
    gate.start()
    try:
        until(lambda: porch.status.frames_read == 5 and gate.status.state == "retrying", "the cameras")
        frame = porch.next_frame(after=0, timeout=1)  # the first four were never taken: dropped
        assert frame is not None and frame.number == 5
        porch.analysed(frame, at=time.monotonic() - 0.5)  # two analyses half a second apart
        porch.analysed(frame)
        health, status = service.health(), porch.status
        cameras = service.status()["cameras"]
    finally:
        source.release.set()
        porch.stop()
        gate.stop()
        service.store.close()
    assert health["reports_pending"] == 3.0
    assert (health["camera.porch.running"], health["camera.porch.dropped"]) == (1.0, 4.0)
    assert health["camera.porch.fps"] == status.fps > 0
    assert health["camera.porch.analysed_fps"] > 0 and health["camera.gate.analysed_fps"] == 0
    assert cameras["porch"]["analysed_fps"] > 0 and cameras["porch"]["analysed_age_s"] >= 0
    assert cameras["gate"]["analysed_age_s"] is None
    assert (health["camera.gate.running"], health["camera.gate.dropped"], health["camera.gate.fps"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert (health["cameras"], health["cameras_running"], health["fps"]) == (2.0, 1.0, status.fps)
    assert [k for k in health if k.startswith("camera.")] == [
        f"camera.{name}.{figure}"
        for name in ("porch", "gate")
        for figure in ("fps", "analysed_fps", "dropped", "running")
    ]
    assert check_health(health) == health


def test_with_more_cameras_than_fit_the_totals_stay_and_whole_cameras_are_left_out(
    tmp_path: Path, model_store: ModelStore, model_cache: Path
) -> None:
    names = [f"{i:02d}-" + "c" * 29 for i in range(64)]  # the config's most: 64 names of 32 characters
    service = agent(tmp_path, model_store, model_cache, names)
    try:
        health = service.health()
    finally:
        service.store.close()
    assert max(len(key) for key in health) <= MAX_HEALTH_KEY_CHARS
    totals = [k for k in health if not k.startswith("camera.")]
    assert {"cameras", "fps", "outbox_pending", "reports_pending", "snapshots_dropped"} <= set(totals)
    assert health["cameras"] == 64.0
    shown = list(dict.fromkeys(k.split(".")[1] for k in health if k.startswith("camera.")))
    links_own = len(set(SYNC_HEALTH) - set(totals))  # the link's figures the service has no value for
    room = MAX_HEALTH_ENTRIES - len(totals) - links_own
    assert shown == names[: len(shown)] and len(shown) == room // len(CAMERA_HEALTH)
    assert all(f"camera.{name}.{figure}" in health for name in shown for figure in CAMERA_HEALTH)
    # with the figures the link adds (tested in tests/agent/fleet/test_sync.py) the server still takes it all
    with_link = {**health, **dict.fromkeys(SYNC_HEALTH, 1.0)}
    assert len(with_link) <= MAX_HEALTH_ENTRIES
    assert check_health(with_link) == with_link


def test_a_clock_before_the_release_is_warned_of_in_the_status_and_the_metrics(
    tmp_path: Path, model_store: ModelStore, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = agent(tmp_path, model_store, model_cache, [])
    try:
        believed = service.status()["warnings"], service.figures().clock_implausible
        monkeypatch.setattr(time, "time", lambda: 5.0)  # no real-time clock, booted offline
        status, figures = service.status(), service.figures()
        gauge = service.metrics.registry.get_sample_value("facefleet_agent_clock_implausible")
    finally:
        service.store.close()
    assert believed == ([], False)
    (warning,) = status["warnings"]
    assert warning.startswith("the wall clock reads 1970-01-01T00:00:05Z, before 2026-01-01T00:00:00Z")
    assert warning.endswith("set the clock (NTP: chrony or systemd-timesyncd)")
    assert figures.clock_implausible and gauge == 1.0


def test_client_certificates_near_or_past_expiry_are_warned_of_in_the_status_and_the_metrics(
    tmp_path: Path, model_store: ModelStore, model_cache: Path
) -> None:
    """[mqtt] with a certificate that expires in 10 days, [server] with one that expired: both are in the
    status's warnings with the fix, and the metric gives the seconds left; the clock is not blamed."""
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["127.0.0.1"])
    now = datetime.now(timezone.utc)
    soon = certs.issue_device(
        tls, "door-box", out_dir=tmp_path / "mqtt", days=20, not_before=now - timedelta(days=10)
    )
    expired = certs.issue_device(
        tls, "door-box", out_dir=tmp_path / "server", days=1, not_before=now - timedelta(days=2)
    )
    service = configured(
        tmp_path,
        model_store,
        model_cache,
        f'device_id = "door-box"\n[metrics]\nlisten = ""\n'
        f'[mqtt]\nhost = "127.0.0.1"\ntls = true\nca_file = "{tls / "ca.pem"}"\n'
        f'cert_file = "{soon.cert}"\nkey_file = "{soon.key}"\n'
        f'[server]\nenabled = true\naddress = "127.0.0.1:7443"\nca_file = "{tls / "ca.pem"}"\n'
        f'cert_file = "{expired.cert}"\nkey_file = "{expired.key}"\n',
    )
    try:
        warnings, figures = service.status()["warnings"], service.figures()
        registry = service.metrics.registry
        gauge = {kind: registry.get_sample_value(EXPIRY, {"kind": kind}) for kind in ("mqtt", "server")}
    finally:
        service.store.close()
    assert soon.not_after is not None and expired.not_after is not None
    server, mqtt = warnings
    assert mqtt.startswith(f"mqtt.cert_file {soon.cert}: the certificate expires at ")
    assert "in 10.0 days" in mqtt and "`facefleet-server certs renew door-box` on the server host" in mqtt
    assert server.startswith(f"server.cert_file {expired.cert}: the certificate expired at ")
    assert not figures.clock_implausible
    assert gauge["mqtt"] == pytest.approx(soon.not_after.timestamp() - time.time(), abs=60)
    assert gauge["server"] == pytest.approx(expired.not_after.timestamp() - time.time(), abs=60)
    assert gauge["server"] is not None and gauge["server"] < 0


def test_the_longest_camera_name_fits_every_per_camera_key() -> None:
    longest = CameraConfig(name="c" * 32, source="0").name
    with pytest.raises(ValueError, match="should match pattern"):  # the config allows 32 characters at most
        CameraConfig(name="c" * 33, source="0")
    keys = {f"camera.{longest}.{figure}": 0.0 for figure in CAMERA_HEALTH}
    assert max(len(key) for key in keys) <= MAX_HEALTH_KEY_CHARS
    assert check_health(keys) == keys


def test_a_store_found_damaged_while_serving_stops_the_service_and_other_store_errors_do_not(
    tmp_path: Path, model_store: ModelStore, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gallery refresh meets a damaged store (SQLite's integrity error): the service stops with it (exit
    74, and the start check then names the fix) instead of deciding on without its store; a store that is
    only busy or full keeps the last gallery and the service goes on."""
    service = agent(tmp_path, model_store, model_cache, [])
    failures: list[Exception] = [StoreError("store busy")]

    def refresh(*_: object) -> None:
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(service.matcher, "refresh", refresh)
    outcome: list[BaseException | int] = []

    def serve() -> None:
        try:
            outcome.append(service.run())
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=serve, daemon=True)
    runner.start()
    until(lambda: not failures, "the busy store's refresh")
    time.sleep(0.2)
    assert not outcome, "a busy store stopped the service"
    failures.append(StoreCorruptError("store agent.db is corrupt (database disk image is malformed)"))
    runner.join(30)
    assert not runner.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreCorruptError), outcome
    assert outcome[0].exit_code == 74


def test_a_renewed_certificate_without_its_key_is_warned_of_and_the_one_in_use_stays_the_one_reported(
    tmp_path: Path, model_store: ModelStore, model_cache: Path
) -> None:
    """[server]'s certificate expired; a renewed one is copied over it but its key is not: the server link
    goes on with the pair it has, so the status warns of the expired certificate in use (not of the renewed
    file) and of the TLS files it cannot use, naming the fix."""
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["127.0.0.1"])
    now = datetime.now(timezone.utc)
    expired = certs.issue_device(
        tls, "door-box", out_dir=tmp_path / "server", days=1, not_before=now - timedelta(days=2)
    )
    renewed = certs.issue_device(tls, "door-box", out_dir=tmp_path / "renewed", days=365)
    service = configured(
        tmp_path,
        model_store,
        model_cache,
        f'device_id = "door-box"\n[metrics]\nlisten = ""\n[mqtt]\nenabled = false\n'
        f'[server]\nenabled = true\naddress = "127.0.0.1:7443"\nca_file = "{tls / "ca.pem"}"\n'
        f'cert_file = "{expired.cert}"\nkey_file = "{expired.key}"\n',
    )
    try:
        assert service.sync is not None
        expired.cert.write_bytes(renewed.cert.read_bytes())  # the certificate, not yet its key
        service.sync._reread_tls()  # as before each connection
        warnings = service.status()["warnings"]
    finally:
        service.store.close()
    in_use, unusable = warnings
    assert in_use.startswith(f"server.cert_file {expired.cert}: the certificate expired at ")
    assert "the TLS files changed but cannot be used" in unusable and str(expired.key) in unusable
