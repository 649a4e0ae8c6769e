"""The sync client's pieces that need no server: reconnect backoff, where a Watch resumes, the [server]
config section and its TLS files, and a client whose server is unreachable. The end-to-end behaviour
against a real server is in tests/server/fleet/test_agent_sync.py."""

from __future__ import annotations

import logging
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from facefleet.agent.config import AgentConfig, FleetServerConfig, load_config
from facefleet.agent.domain.fleet import SyncPoint
from facefleet.agent.fleet.channel import read_tls
from facefleet.agent.fleet.sync import FleetSync, SyncSettings, resume_from
from facefleet.agent.publish.events import Versions, access_event
from facefleet.agent.recognition.doors import AccessDecision
from facefleet.agent.store.database import EmbeddingStore
from facefleet.core.backoff import Backoff
from facefleet.core.config import credential_path
from facefleet.core.errors import ConfigError
from facefleet.link.checks import MAX_HEALTH_ENTRIES, check_health
from facefleet.link.fleet import Welcome
from facefleet.server.api import certs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODEL = "sface@2021dec"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_backoff_doubles_up_to_the_maximum_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.8 * nominal <= delay <= nominal
    backoff.reset()
    assert backoff.next() <= 1.0


WELCOME = Welcome(
    gallery_revision=10,
    gallery_id="g",
    embedding_models=(MODEL,),
    max_report_events=100,
    heartbeat_seconds=30,
)


@pytest.mark.parametrize(
    ("point", "resync", "expected", "why"),
    [
        (SyncPoint(), False, (0, ""), None),
        (SyncPoint(7, "g", (MODEL,)), False, (7, "g"), None),
        (SyncPoint(10, "g", (MODEL,)), False, (10, "g"), None),
        (SyncPoint(7, "g", (MODEL,)), True, (0, ""), "the last delta did not continue the stored gallery"),
        (
            SyncPoint(7, "g", ("arcface@r100",)),
            False,
            (0, ""),
            "the embedding models changed (arcface@r100 → sface",
        ),
        (SyncPoint(7, "other", (MODEL,)), False, (0, ""), "the server's gallery is 'g', not 'other'"),
        (SyncPoint(12, "g", (MODEL,)), False, (0, ""), "the stored revision 12 is ahead of the server's 10"),
    ],
)
def test_a_watch_resumes_from_the_applied_revision_unless_a_snapshot_is_needed(
    point: SyncPoint, resync: bool, expected: tuple[int, str], why: str | None
) -> None:
    revision, gallery_id, reason = resume_from(point, WELCOME, (MODEL,), resync)
    assert (revision, gallery_id) == expected
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason


def server_section(tmp_path: Path, **values: object) -> dict[str, object]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_bytes(PEM)
    section: dict[str, object] = {
        "enabled": True,
        "address": "fleet.example:7443",
        "ca_file": str(files["ca"]),
        "cert_file": str(files["cert"]),
        "key_file": str(files["key"]),
    }
    return {**section, **values}


def test_the_server_section_is_off_by_default_with_documented_defaults() -> None:
    server = AgentConfig().server
    assert (
        server.enabled,
        server.address,
        server.report_batch,
        server.reconnect_max_s,
        server.keepalive_s,
    ) == (
        False,
        "",
        500,
        60,
        30,
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"address": ""}, "[server] is enabled but address not set"),
        ({"ca_file": None, "key_file": None}, "[server] is enabled but ca_file, key_file not set"),
        ({"address": "fleet.example"}, "address 'fleet.example' must look like 'host:port'"),
        ({"address": "fleet.example:99999"}, "must look like 'host:port'"),
        ({"keepalive_s": 5}, "greater than or equal to 10"),
        ({"report_batch": 0}, "greater than or equal to 1"),
        ({"retry": 3}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_server_section_is_refused_naming_the_key(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        AgentConfig.model_validate({"server": server_section(tmp_path, **values)})
    assert message in str(info.value)


def test_a_disabled_section_needs_no_files_and_ipv6_addresses_parse(tmp_path: Path) -> None:
    AgentConfig.model_validate({"server": {"enabled": False}})
    config = AgentConfig.model_validate({"server": server_section(tmp_path, address="[::1]:7443")})
    assert config.server.address == "[::1]:7443"


def test_a_bare_key_file_name_is_found_in_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert credential_path(Path("device-key")) == tmp_path / "creds" / "device-key"
    assert credential_path(Path("/etc/facefleet-agent/device.key")) == Path("/etc/facefleet-agent/device.key")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert credential_path(Path("device-key")) == Path("device-key")


def settings(tmp_path: Path, address: str) -> SyncSettings:
    section = server_section(tmp_path)
    return SyncSettings(
        address=address,
        device_id="door-1",
        ca_file=Path(str(section["ca_file"])),
        cert_file=Path(str(section["cert_file"])),
        key_file=Path(str(section["key_file"])),
        models=(MODEL,),
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )


def test_unusable_tls_files_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["127.0.0.1"])
    device, other = certs.issue_device(tls, "door-1"), certs.issue_device(tls, "door-2")
    real = {"ca_file": tls / "ca.pem", "cert_file": device.cert, "key_file": device.key}
    good = SyncSettings(**{**settings(tmp_path, "127.0.0.1:1").__dict__, **real})
    assert read_tls(good) == (real["ca_file"].read_bytes(), device.key.read_bytes(), device.cert.read_bytes())
    foreign = SyncSettings(**{**good.__dict__, "key_file": other.key})
    with pytest.raises(
        ConfigError, match=rf"key_file {other.key} is not the key of cert_file {device.cert}: install the key"
    ):
        FleetSync(foreign, EmbeddingStore(tmp_path / "a.db"))
    missing = SyncSettings(**{**good.__dict__, "cert_file": tmp_path / "nope.pem"})
    with pytest.raises(
        ConfigError, match=r"\[server\] cert_file .*nope.pem: cannot read .* certs issue DEVICE"
    ):
        read_tls(missing)
    (tmp_path / "key.txt").write_text("not a key")
    not_pem = SyncSettings(**{**good.__dict__, "key_file": tmp_path / "key.txt"})
    with pytest.raises(ConfigError, match=r"\[server\] key_file .*key.txt is not a PEM file"):
        read_tls(not_pem)
    with pytest.raises(ConfigError, match="must look like 'host:port'"):
        FleetSync(SyncSettings(**{**good.__dict__, "address": "no-port"}), EmbeddingStore(tmp_path / "a.db"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_without_a_server_events_wait_in_the_store_and_stop_cuts_the_backoff_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="facefleet.agent.fleet.sync")
    address = f"127.0.0.1:{free_port()}"
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["127.0.0.1"])
    device = certs.issue_device(tls, "door-1")
    slow = SyncSettings(
        **{
            **settings(tmp_path, address).__dict__,
            "ca_file": tls / "ca.pem",
            "cert_file": device.cert,
            "key_file": device.key,
            "reconnect_min_s": 60.0,
            "reconnect_max_s": 60.0,
        }
    )
    with EmbeddingStore(tmp_path / "agent.db") as store:
        sync = FleetSync(slow, store)
        sync.start()
        try:
            denied = AccessDecision("main", "denied", "unknown face", "identify", None, None, None, 3)
            assert sync.submit(
                access_event("door-1", "front", denied, Versions("0.1", "2026.0", {}, 0), time.time())
            )
            deadline = time.monotonic() + 20
            while "retrying in" not in caplog.text:
                assert time.monotonic() < deadline, "no retry logged"
                time.sleep(0.02)
            assert sync.running
        finally:
            sync.stop(timeout=10)  # the backoff is 48–60 s: only an interrupted wait ends in time
        assert not sync.running
        assert not sync.connected
        assert store.reports.count() == 1
        status = sync.status()
        assert (status["connected"], status["reports_pending"], status["address"]) == (False, 1, address)
    line = next(r.getMessage() for r in caplog.records if "retrying in" in r.getMessage())
    assert line.startswith(f"server {address}: cannot reach it (")
    assert re.search(r"\(retrying in (4[89]|5\d|60) s\)$", line), line


def test_health_keeps_the_links_own_figures_first_within_the_servers_limit(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["127.0.0.1"])
    device = certs.issue_device(tls, "door-1")
    real = SyncSettings(
        **{
            **settings(tmp_path, "127.0.0.1:1").__dict__,
            "ca_file": tls / "ca.pem",
            "cert_file": device.cert,
            "key_file": device.key,
        }
    )
    cameras = {f"camera.cam-{i:03d}.fps": float(i) for i in range(2 * MAX_HEALTH_ENTRIES)}
    with EmbeddingStore(tmp_path / "agent.db") as store:
        sync = FleetSync(real, store, lambda: {"fps": 9.5, "reports_pending": 99.0, **cameras})
        denied = AccessDecision("main", "denied", "unknown face", "identify", None, None, None, 3)
        for _ in range(3):
            assert sync.submit(
                access_event("door-1", "front", denied, Versions("0.1", "2026.0", {}, 0), time.time())
            )
        health = sync._health(sending=1)
    assert check_health(health) == health and len(health) == MAX_HEALTH_ENTRIES
    assert health["reports_pending"] == 2.0  # the queue's, beyond the one being sent, not the caller's
    assert (health["reports_dropped"], health["reports_refused"], health["clock_implausible"]) == (0, 0, 0)
    assert sync.certificate_expires_at is not None
    assert health["certificate_expires_at"] == sync.certificate_expires_at
    assert health["fps"] == 9.5
    assert [k for k in health if k.startswith("camera.")] == list(cameras)[: MAX_HEALTH_ENTRIES - 7]


def test_the_readme_documents_every_server_key_in_a_valid_config_block() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    block = readme.split("### Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = AgentConfig.model_validate(tomllib.loads(block))
    assert config.server == FleetServerConfig()  # the block shows the defaults
    section = block.split("\n[server]", 1)[1].split("\n[", 1)[0]
    documented = {line.lstrip("# ").split("=")[0].strip() for line in section.splitlines()[1:] if "=" in line}
    assert documented == set(FleetServerConfig.model_fields)


def test_the_example_config_shows_a_server_section_that_is_off_until_certificates_are_installed() -> None:
    config = load_config(Path(__file__).parents[3] / "systemd" / "agent.example.toml")
    assert (config.server.enabled, config.server.address, config.server.key_file) == (
        False,
        "fleet.example:7443",
        Path("device-key"),
    )
