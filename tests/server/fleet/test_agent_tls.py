"""The agent's TLS files against a real server (mutual TLS, real FleetSync): a renewed certificate installed
while its key is still the old one (a key systemd copied from LoadCredential= at service start, or files
copied one at a time) keeps the session on the pair in use with one error naming the fix, and a certificate
out of its dates is named as the reason the server cannot be reached."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from facefleet.agent.publish.certificates import utc
from facefleet.server.api import certs
from facefleet.server.gallery.embedder import Enroller
from tests.server.conftest import Pki, run, serving
from tests.server.fleet.test_agent_sync import open_store, settings, syncing, until
from tests.server.fleet.test_devices import issue

LOGGER = "facefleet.agent.fleet.sync"


def expiry(cert: Path) -> float:
    return x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc.timestamp()


@pytest.mark.parametrize("key_from", ["credential", "key_file"])
def test_a_renewed_certificate_without_its_key_keeps_the_session_on_the_pair_in_use(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    key_from: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """credential: the key is systemd's copy in $CREDENTIALS_DIRECTORY, which a renewal on disk does not
    change until a restart; key_file: the renewed certificate is installed before its key."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    etc, credentials = tmp_path / "etc", tmp_path / "credentials"
    etc.mkdir()
    credentials.mkdir()
    cert, key = etc / "device.pem", etc / "device.key"
    if key_from == "credential":
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
        agent_key = credentials / "device-key"
    else:
        agent_key = key

    async def scenario() -> tuple[list[str], float | None, str | None]:
        async with serving(tmp_path, pki, enroller, fleet={"watch_max_age_seconds": 1}) as harness:
            old = issue(harness, tmp_path / "old", "gate", days=400)
            shutil.copy(old.cert, cert)
            shutil.copy(old.key, key)
            shutil.copy(old.key, credentials / "device-key")  # what systemd hands over at service start
            with open_store(tmp_path / "agent.db") as store:
                agent = settings(harness, pki, "gate", cert_file=cert, key_file=agent_key)
                async with syncing(agent, store) as sync:
                    await until(lambda: sync.connected, what="the first connection")
                    new = issue(harness, tmp_path / "new", "gate", days=200)  # `certs renew gate`
                    shutil.copy(new.cert, cert)
                    if key_from == "credential":
                        shutil.copy(new.key, key)  # on disk; the agent's copy stays the old key
                    changed = sync.connects
                    # Reconnects (the server's maximum stream age) with the files as they are: the old pair.
                    await until(lambda: sync.connects >= changed + 2 and sync.connected, what="reconnects")
                    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                    kept = sync.certificate_expires_at
                    status = sync.status()
                    assert status["tls_error"] is not None and status["certificate_expires_at"] == kept
                    # Put right: a restart copies the new key (credential), or the key is installed.
                    shutil.copy(new.key, credentials / "device-key" if key_from == "credential" else key)
                    await until(lambda: sync.certificate_expires_at == expiry(cert), what="the new pair used")
                    await until(lambda: sync.connected, what="a connection with the new pair")
                    return errors, kept, sync.status()["tls_error"]

    errors, kept, cleared = run(scenario)
    assert kept == expiry(tmp_path / "old" / "devices" / "gate.pem")
    assert cleared is None
    assert len(errors) == 1, errors  # once, not at every reconnect
    (error,) = errors
    assert f"key_file {agent_key} is not the key of cert_file {cert}" in error
    assert f"valid until {utc(kept)}" in error
    if key_from == "credential":
        assert "`systemctl restart facefleet-agent`" in error
    else:
        assert "install the key issued with that certificate at key_file" in error
    assert "the TLS files are usable again" in caplog.text


@pytest.mark.parametrize("dates", ["expired", "not valid yet"])
def test_a_certificate_out_of_its_dates_is_named_as_why_the_server_cannot_be_reached(
    tmp_path: Path, pki: Pki, enroller: Enroller, dates: str
) -> None:
    now, out = datetime.now(timezone.utc), tmp_path / "devices"
    if dates == "expired":
        issued = certs.issue_device(
            pki.tls_dir, "old-box", out_dir=out, days=1, not_before=now - timedelta(days=2)
        )
        expected = f"this device's certificate expired at {utc(expiry(issued.cert))}"
        fix = "install a renewed one from `facefleet-server certs renew old-box`"
    else:
        issued = certs.issue_device(
            pki.tls_dir, "new-box", out_dir=out, days=30, not_before=now + timedelta(days=1)
        )
        expected = "this device's certificate is valid only from"
        fix = "set the clock"

    async def scenario() -> str:
        async with serving(tmp_path, pki, enroller) as harness:
            with open_store(tmp_path / "agent.db") as store:
                device = issued.cert.stem
                agent = settings(harness, pki, device, cert_file=issued.cert, key_file=issued.key)
                async with syncing(agent, store) as sync:
                    return await until(lambda: sync.last_error, what="a failed connection")

    error = run(scenario)
    assert error.startswith(expected), error
    assert fix in error
    assert f"cert_file {issued.cert}" in error
    assert "(the connection failed: " in error
