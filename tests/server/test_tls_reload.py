"""The server's TLS files renewed while it serves: a real server (mutual TLS for agents, TLS for operators and
the HTTP API) reloads them (SIGHUP calls FleetServer.reload_tls) for new connections on every listener, keeps
the connections already made, refuses files that do not work together and keeps serving the old ones, and
warns of a server certificate or CA close to its expiry."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import utc_now
from facefleet.server import app as app_module
from facefleet.server import paths as paths_module
from facefleet.server.api import certs
from facefleet.server.api.http import server as http_server
from facefleet.server.app import TLS_EXPIRY_WARNING_DAYS
from facefleet.server.gallery.embedder import Enroller
from facefleet.server.paths import ServerPaths, ServerTls, check_tls
from facefleet.v1 import fleet_pb2, fleet_pb2_grpc
from tests.server.cli.test_cli import run_cli
from tests.server.conftest import Harness, Pki, next_update, run, serving


def own_pki(tmp_path: Path, pki: Pki, *, server_days: int = certs.LEAF_DAYS) -> Pki:
    """A site PKI of this test's own (the session's is shared): CA, server certificate, door-1."""
    tls = tmp_path / "tls"
    certs.init_ca(tls, server_names=["localhost", "127.0.0.1"])
    certs.issue_server(tls, ["localhost", "127.0.0.1"], days=server_days)
    certs.issue_device(tls, "door-1")
    return Pki(tls, pki.foreign_dir)


def tls_section(own: Pki) -> dict[str, str]:
    return {
        "ca_cert": str(own.tls_dir / "ca.pem"),
        "server_cert": str(own.tls_dir / "server.pem"),
        "server_key": str(own.tls_dir / "server.key"),
    }


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def presented(port: int, own: Pki, *, alpn: str = "h2", device: str | None = None) -> int:
    """The serial of the certificate the server presents to a new connection (that verifies it)."""
    context = ssl.create_default_context(cafile=own.tls_dir / "ca.pem")
    context.set_alpn_protocols([alpn])
    if device is not None:
        issued = own.device(device)
        context.load_cert_chain(issued.cert, issued.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


async def all_presented(h: Harness, own: Pki) -> set[int]:
    """Serials presented by the agents' listener (with door-1's certificate), the operators' and HTTP."""
    return {
        await asyncio.to_thread(presented, h.agents_port, own, device="door-1"),
        await asyncio.to_thread(presented, h.operators_port, own),
        await asyncio.to_thread(presented, h.http_port, own, alpn="http/1.1"),
    }


def test_a_reload_serves_the_renewed_certificate_to_new_connections_and_keeps_the_ones_made(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    own = own_pki(tmp_path, pki)
    first = serial(own.tls_dir / "server.pem")

    async def scenario() -> None:
        sections = {"tls": tls_section(own), "gallery": {"heartbeat_seconds": 2}}
        async with serving(tmp_path, own, enroller, **sections) as h:
            stub = await h.registered("door-1")
            stream = stub.Watch(fleet_pb2.WatchRequest(device_id="door-1", from_revision=0))
            await next_update(stream)
            assert await all_presented(h, own) == {first}

            renewed = certs.issue_server(own.tls_dir, ["localhost", "127.0.0.1"])
            assert await all_presented(h, own) == {first}  # not before a reload
            with caplog.at_level(logging.INFO, logger="facefleet.server.app"):
                assert h.server.reload_tls()
            assert "new connections get the server certificate for localhost, 127.0.0.1" in caplog.text
            second = int(renewed.serial, 16)
            assert await all_presented(h, own) == {second}
            # the agent's connection made before stays up: its stream and its calls go on
            await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="test"))
            assert await next_update(stream) is not None

            # a key of another certificate: refused, logged, and the loaded pair keeps serving
            (own.tls_dir / "server.key").write_bytes((pki.foreign_dir / "server.key").read_bytes())
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="facefleet.server.app"):
                assert not h.server.reload_tls()
            [refused] = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert "the TLS files were not reloaded, the ones loaded before keep serving" in refused.message
            assert (
                f"{own.tls_dir / 'server.key'} does not belong to the server certificate" in refused.message
            )
            assert await all_presented(h, own) == {second}
            await h.fleet("door-1").Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="t"))

    run(scenario)


def test_a_reload_serves_the_files_it_read_and_checked_though_they_change_meanwhile(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A certificate and key copied in one after the other (`cp`, an ACME hook) and a CA rewritten in place
    while a reload runs: every listener serves the files as they were read and checked, never their later
    bytes. A handshake that completes proves the certificate presented is that of the key that signed it."""
    own = own_pki(tmp_path, pki)
    cert, key, ca = own.tls_dir / "server.pem", own.tls_dir / "server.key", own.tls_dir / "ca.pem"
    first, first_pair, ca_pem = serial(cert), (cert.read_bytes(), key.read_bytes()), ca.read_bytes()
    renewed = certs.issue_server(
        own.tls_dir,
        ["localhost", "127.0.0.1"],
        target=certs.Issued(tmp_path / "new.pem", tmp_path / "new.key"),
    )
    second, second_pair = int(renewed.serial, 16), (renewed.cert.read_bytes(), renewed.key.read_bytes())
    read_pem = paths_module.read_pem

    def install(pair: tuple[bytes, bytes]) -> None:
        cert.write_bytes(pair[0])
        key.write_bytes(pair[1])

    def changed_after_checking(paths: ServerPaths) -> ServerTls:
        tls = check_tls(paths)
        cert.write_bytes(first_pair[0])  # the next certificate copied in, its key not yet
        return tls

    def refuse(context: ssl.SSLContext, tls: ServerTls) -> None:
        raise ssl.SSLError("out of memory")

    def changed_after_reading(path: Path, name: str) -> bytes:
        data = read_pem(path, name)
        if name == "ca_cert":
            ca.write_bytes(ca_pem[: len(ca_pem) // 2])  # being rewritten in place
        if name == "server_key":  # the last one read
            cert.write_bytes(second_pair[0])
        return data

    async def scenario() -> None:
        async with serving(tmp_path, own, enroller, tls=tls_section(own)) as h:
            assert await all_presented(h, own) == {first}
            install(second_pair)
            with monkeypatch.context() as patched:
                patched.setattr(app_module, "check_tls", changed_after_checking)
                assert h.server.reload_tls()
            assert await all_presented(h, own) == {second}

            install(first_pair)
            with monkeypatch.context() as patched:
                patched.setattr(paths_module, "read_pem", changed_after_reading)
                assert h.server.reload_tls()
            ca.write_bytes(ca_pem)  # for the clients of all_presented
            assert await all_presented(h, own) == {first}
            # the CA as read, not as it was left: agents' certificates are still checked against all of it
            await h.fleet("door-1").Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="t"))

            # the HTTP API's new context cannot be made: refused, logged, nothing changes on any listener
            install(second_pair)
            with (
                monkeypatch.context() as patched,
                caplog.at_level(logging.ERROR, logger="facefleet.server.app"),
            ):
                patched.setattr(http_server, "load_pair", refuse)
                assert not h.server.reload_tls()
            assert "listen.http: cannot use the server certificate" in caplog.text
            assert await all_presented(h, own) == {first}

    run(scenario)


def test_a_reload_takes_a_new_ca_for_agents_certificates(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    """ca.pem extended with a second CA (the overlap of a CA replacement) admits that CA's devices after a
    reload, without a restart."""
    own = own_pki(tmp_path, pki)
    other = tmp_path / "next"
    certs.init_ca(other, server_names=["localhost"])
    certs.issue_device(other, "door-2")

    async def scenario() -> None:
        async with serving(tmp_path, own, enroller, tls=tls_section(own)) as h:
            with pytest.raises(grpc.aio.AioRpcError):  # its certificate fails the handshake
                await h.fleet("door-2", tls_dir=other).Register(
                    fleet_pb2.RegisterRequest(device_id="door-2", agent_version="t"), timeout=5
                )
            bundle = (own.tls_dir / "ca.pem").read_bytes() + (other / "ca.pem").read_bytes()
            (own.tls_dir / "ca.pem").write_bytes(bundle)
            assert h.server.reload_tls()
            await h.fleet("door-2", tls_dir=other).Register(
                fleet_pb2.RegisterRequest(device_id="door-2", agent_version="t"), timeout=10
            )

    run(scenario)


def test_a_server_certificate_close_to_its_expiry_is_warned_of_and_measured(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    own = own_pki(tmp_path, pki, server_days=TLS_EXPIRY_WARNING_DAYS - 10)
    server = x509.load_pem_x509_certificate((own.tls_dir / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((own.tls_dir / "ca.pem").read_bytes())

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="facefleet.server.app"):
            async with serving(tmp_path, own, enroller, tls=tls_section(own)) as h:
                registry = h.server.metrics.registry
                name = "facefleet_server_tls_not_after_seconds"
                assert registry.get_sample_value(name, {"file": "server_cert"}) == (
                    server.not_valid_after_utc.timestamp()
                )
                assert (
                    registry.get_sample_value(name, {"file": "ca_cert"}) == ca.not_valid_after_utc.timestamp()
                )
                [warning] = [r.message for r in caplog.records if "tls.server_cert" in r.message]
                assert f"tls.server_cert {own.tls_dir / 'server.pem'}: certificate 'CN=localhost'" in warning
                assert "expires in 19 days" in warning and "facefleet-server certs server" in warning
                assert not [r for r in caplog.records if "tls.ca_cert" in r.message]  # 10 years left
                caplog.clear()
                h.server._tls_expiry(h.server._tls, utc_now() + timedelta(days=3650 - 20))  # type: ignore[arg-type]
                assert [r for r in caplog.records if "tls.ca_cert" in r.message and "expires in" in r.message]

    run(scenario)


def test_replacing_the_site_ca_as_the_readme_says_keeps_every_agent_connected(
    tmp_path: Path, pki: Pki, enroller: Enroller, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's "Replacing the site CA", step by step, with a real server reloading (SIGHUP) between
    steps: an agent that got the bundle stays connected throughout, on its old certificate and then on its
    renewed one; one that was left with the old CA alone is cut off once the server certificate changes."""
    state = tmp_path / "state"
    tls, next_dir = state / "tls", tmp_path / "ca-next"
    cli = ["--state-dir", str(state)]
    assert run_cli(capsys, *cli, "certs", "init", "--server-name", "localhost")[0] == EXIT_OK
    assert run_cli(capsys, *cli, "certs", "issue", "door-1", "--out", str(tmp_path / "door-1"))[0] == EXIT_OK
    old_ca = (tls / "ca.pem").read_bytes()
    site = Pki(tls, pki.foreign_dir)

    def agent(h: Harness, ca: bytes, device: Path) -> fleet_pb2_grpc.FleetServiceStub:
        key, cert = (device / "door-1.key").read_bytes(), (device / "door-1.pem").read_bytes()
        return fleet_pb2_grpc.FleetServiceStub(
            h.channel(h.agents_port, grpc.ssl_channel_credentials(ca, key, cert))
        )

    async def connects(stub: fleet_pb2_grpc.FleetServiceStub) -> bool:
        try:
            await stub.Register(fleet_pb2.RegisterRequest(device_id="door-1", agent_version="t"), timeout=10)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def scenario() -> None:
        async with serving(tmp_path, site, enroller, tls=tls_section(site)) as h:
            # 1. the new CA, in a directory of its own
            assert run_cli(capsys, "--state-dir", str(next_dir), "certs", "init")[0] == EXIT_OK
            # 2. both CAs trusted: by every agent (ca_file) and by the server (tls/ca.pem), then a reload
            both = old_ca + (next_dir / "tls" / "ca.pem").read_bytes()
            (tmp_path / "both.pem").write_bytes(both)
            (tls / "ca.pem").write_bytes(both)
            assert h.server.reload_tls()
            bundled = agent(h, both, tmp_path / "door-1")
            assert await connects(bundled)
            # 3. the new CA signs from now on: its key, then the server certificate (same names), a reload
            shutil.copy(next_dir / "tls" / "ca.key", tls / "ca.key")
            assert run_cli(capsys, *cli, "certs", "server")[0] == EXIT_OK
            assert h.server.reload_tls()
            assert await connects(agent(h, both, tmp_path / "door-1"))  # the old device certificate
            assert not await connects(agent(h, old_ca, tmp_path / "door-1"))  # an agent skipped in step 2
            # 4. each device renewed, by the new CA
            renewed = tmp_path / "door-1-new"
            assert run_cli(capsys, *cli, "certs", "renew", "door-1", "--out", str(renewed))[0] == EXIT_OK
            await h.server.refresh()  # the server's look for device changes (every fleet.poll_seconds)
            assert await connects(agent(h, both, renewed))
            # 5. every device renewed: the new CA alone, on the server and the agents
            shutil.copy(next_dir / "tls" / "ca.pem", tls / "ca.pem")
            assert h.server.reload_tls()
            new_ca = (next_dir / "tls" / "ca.pem").read_bytes()
            assert await connects(agent(h, new_ca, renewed))
            assert not await connects(agent(h, new_ca, tmp_path / "door-1"))
            assert await connects(bundled)  # a connection made before keeps going meanwhile

    run(scenario)
