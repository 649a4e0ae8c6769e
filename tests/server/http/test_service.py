"""The HTTP API as a listener of the server: TLS with the site certificate (a client that does not trust the
site CA is refused), the OpenAPI document, curl as a client, plaintext in insecure development mode, off
when `listen.http` is empty, and an address in use refused like the gRPC listeners' (BindError)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from facefleet.core.errors import EXIT_UNAVAILABLE
from facefleet.server.app import BindError
from facefleet.server.gallery.embedder import Enroller
from tests.server.conftest import Harness, Pki, run, serving
from tests.server.http.clients import client


def test_the_openapi_document_lists_every_group_of_endpoints(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness, "") as http:
            response = await http.get("/api/openapi.json")
            assert response.status_code == 200
            return dict(response.json())

    document = run(scenario)
    paths = document["paths"]
    for path, methods in {
        "/api/people": {"get", "post"},
        "/api/people/{person_id}": {"get", "patch", "delete"},
        "/api/people/{person_id}/crops/{index}": {"get"},
        "/api/unknown/clusters": {"get"},
        "/api/unknown/clusters/{cluster_id}/enrol": {"post"},
        "/api/snapshots/{snapshot_id}/{kind}": {"get"},
        "/api/events": {"get"},
        "/api/events/counts": {"get"},
        "/api/events/attributes": {"get"},
        "/api/fleet": {"get"},
        "/api/models": {"get", "post"},
        "/api/rollouts/{rollout_id}/{action}": {"post"},
        "/api/devices/{device_id}/{action}": {"post"},
        "/api/audit": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    enrol = paths["/api/people"]["post"]
    assert "images" in enrol["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert "application/problem+json" in enrol["responses"]["4XX"]["content"]
    assert all("422" not in op["responses"] for methods in paths.values() for op in methods.values())
    assert document["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator token: `facefleet-server tokens create NAME --role admin|query`",
    }
    assert (
        "image/jpeg" in paths["/api/people/{person_id}/crops/{index}"]["get"]["responses"]["200"]["content"]
    )


def test_only_clients_that_trust_the_site_ca_connect(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> list[Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            results: list[Any] = []
            for trusted in (None, pki.foreign_dir / "ca.pem"):
                verify = ssl.create_default_context(cafile=str(trusted)) if trusted else True
                async with httpx.AsyncClient(verify=verify) as http:
                    with pytest.raises(httpx.ConnectError) as refused:
                        await http.get(f"{harness.http_url}/api/people")
                    results.append(str(refused.value))
            async with httpx.AsyncClient() as http:
                with pytest.raises(httpx.HTTPError):  # plaintext on the TLS port
                    await http.get(f"http://localhost:{harness.http_port}/api/people")
            return results

    for message in run(scenario):
        assert "CERTIFICATE_VERIFY_FAILED" in message


async def curl(harness: Harness, *args: str) -> tuple[int, Any]:
    """Run curl against the harness's HTTP API with the admin token; (HTTP status, JSON body)."""
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--cacert", str(harness.pki.tls_dir / "ca.pem"),
        "-H", f"Authorization: Bearer {harness.admin_token}", "--write-out", "\n%{http_code}", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    body, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(body) if body else None


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by scripts/setup")
def test_curl_enrols_lists_and_is_refused_over_the_limit(
    tmp_path: Path, pki: Pki, enroller: Enroller, photo_paths: dict[str, Path]
) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(bytes(3 << 20))  # curl sends it with "Expect: 100-continue"

    async def scenario() -> list[tuple[int, Any]]:
        gallery = {"max_image_bytes": 2 << 20}
        async with serving(tmp_path, pki, enroller, gallery=gallery) as harness:
            url = harness.http_url
            photo, people = photo_paths["astronaut"], f"{url}/api/people"
            return [
                await curl(
                    harness, "-F", "person_id=eileen", "-F", "groups=staff", "-F", f"images=@{photo}", people
                ),
                await curl(harness, f"{url}/api/people?group=staff"),
                await curl(harness, "-F", f"images=@{big}", f"{url}/api/people"),
                await curl(
                    harness, "-X", "PATCH", "--json", '{"display_name": "Eileen"}', f"{url}/api/people/eileen"
                ),
                await curl(harness, f"{url}/api/events/unknown-rate"),
            ]

    enrolled, listed, too_big, updated, rate = run(scenario)
    assert enrolled[0] == 201 and enrolled[1]["person"]["person_id"] == "eileen"
    listed_person = {**enrolled[1]["person"], "embeddings": [], "stored_crops": 1}
    assert listed == (200, {**listed[1], "people": [listed_person]})
    assert too_big[0] == 413 and too_big[1]["code"] == "RESOURCE_EXHAUSTED"
    assert "file 'big.jpg' is over the limit" in too_big[1]["detail"]
    assert updated[0] == 200 and updated[1]["person"]["display_name"] == "Eileen"
    assert rate[0] == 200 and rate[1]["total"]["face_events"] == 0


def test_insecure_development_serves_plaintext_and_an_empty_address_turns_the_api_off(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> tuple[int, int]:
        async with serving(tmp_path / "a", pki, enroller, insecure_development=True) as harness:
            assert harness.http_url.startswith("http://")
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {harness.admin_token}"}) as http:
                status = (await http.get(f"{harness.http_url}/api/people")).status_code
        async with serving(tmp_path / "b", pki, enroller, listen={"http": ""}) as harness:
            return status, harness.http_port

    assert run(scenario) == (200, 0)


def test_an_http_address_in_use_is_a_bind_error(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]

    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller, listen={"http": f"127.0.0.1:{port}"}):
            pass

    try:
        with pytest.raises(BindError) as refused:
            run(scenario)
    finally:
        taken.close()
    assert f"listen.http = '127.0.0.1:{port}': cannot listen" in str(refused.value)
    assert refused.value.exit_code == EXIT_UNAVAILABLE


def test_connections_to_the_http_api_send_small_writes_at_once() -> None:
    """Nagle's algorithm is off on accepted connections (TCP_NODELAY): otherwise each response on a kept-alive
    connection waits for the client's delayed ACK, as its headers and body are two writes."""
    from facefleet.server.api.http.server import _bind

    async def accepted_nodelay() -> int:
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            result.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = _bind("127.0.0.1", 0)
        server = await asyncio.start_server(accept, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        try:
            return await asyncio.wait_for(result, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
