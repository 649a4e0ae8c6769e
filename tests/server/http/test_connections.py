"""The HTTP API's connections within limits: a TLS handshake, and then each request's headers, must come
within their time or the connection is closed; connections past the limit overall or from one address are
closed at once, and other clients are still answered."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from facefleet.server.api.http.connections import Admission, ConnectionLimits, client_of
from facefleet.server.gallery.embedder import Enroller
from tests.server.conftest import Harness, Pki, run, serving

SHORT = {"handshake_timeout_seconds": 0.5, "http_header_timeout_seconds": 0.5}
REQUEST = b"GET /api/fleet HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n"
PADDED = b"GET /api/fleet HTTP/1.1\r\nHost: localhost\r\nX-Padding: %s\r\n\r\n" % (b"x" * 400)
"""A request whose headers take 40 s at a byte every 0.1 s."""
POST_ROLLOUT = (
    b"POST /api/rollouts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
    b"Content-Type: application/json\r\nContent-Length: 6\r\n\r\n"
)
"""The headers of a request whose body is 6 bytes."""
WAIT_S = 30.0
"""How long a test waits for the server to close a connection: far beyond the limits the tests set (0.5 s),
far below what would hold a connection without them (a trickle of 40 s, gRPC's own 120 s, or never)."""


async def connect(
    harness: Harness, source: str = "127.0.0.1", *, tls: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the HTTP API from the address `source` (any of 127.0.0.0/8)."""
    context = ssl.create_default_context(cafile=str(harness.pki.tls_dir / "ca.pem")) if tls else None
    return await asyncio.open_connection(
        "127.0.0.1",
        harness.http_port,
        ssl=context,
        server_hostname="localhost" if tls else None,
        local_addr=(source, 0),
    )


async def seconds_until_closed(reader: asyncio.StreamReader, started: float, limit: float = WAIT_S) -> float:
    """Seconds from `started` until the server closes the connection (reading whatever it sends first)."""
    try:
        while await asyncio.wait_for(reader.read(65536), limit):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    except asyncio.TimeoutError:
        pytest.fail(f"the server kept the connection open over {limit} s")
    return time.monotonic() - started


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, until the connection fails."""
    for byte in data:
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            return
        await asyncio.sleep(every)


async def response_status(reader: asyncio.StreamReader) -> int:
    """The status of the next response on a connection, read whole."""
    status, length = await reader.readline(), 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status.split()[1])


async def fleet(harness: Harness, source: str) -> int:
    """The status of GET /api/fleet from `source`, on a connection of its own."""
    transport = httpx.AsyncHTTPTransport(
        verify=ssl.create_default_context(cafile=str(harness.pki.tls_dir / "ca.pem")), local_address=source
    )
    headers = {"Authorization": f"Bearer {harness.query_token}"}
    async with httpx.AsyncClient(transport=transport, headers=headers, timeout=10) as http:
        return (await http.get(f"{harness.http_url}/api/fleet")).status_code


def test_a_connection_that_sends_no_complete_headers_in_time_is_closed(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> dict[str, float]:
        async with serving(tmp_path, pki, enroller, listen=SHORT) as harness:
            token = harness.query_token.encode()
            closed = {}
            reader, writer = await connect(harness, tls=False)  # no TLS handshake at all
            closed["no handshake"] = await seconds_until_closed(reader, time.monotonic())
            writer.close()
            started = time.monotonic()
            reader, writer = await connect(harness)
            closed["nothing sent"] = await seconds_until_closed(reader, started)
            writer.close()
            started = time.monotonic()
            reader, writer = await connect(harness)
            sending = asyncio.create_task(trickle(writer, PADDED, every=0.1))
            closed["headers a byte at a time"] = await seconds_until_closed(reader, started)
            await sending
            writer.close()

            reader, writer = await connect(harness)
            await trickle(writer, b"GET /api/fleet HTTP/1.1\r\nHost: localhost\r\n", every=0)
            await asyncio.sleep(0.3)  # slower than none, within the limit
            writer.write(b"Authorization: Bearer %s\r\n\r\n" % token)
            assert await response_status(reader) == 200
            await asyncio.sleep(0.3)  # the next request's time starts when the response is sent
            writer.write(REQUEST % token)
            assert await response_status(reader) == 200
            closed["kept alive after a response"] = await seconds_until_closed(reader, time.monotonic())
            writer.close()
            return closed

    closed = run(scenario)
    # closed, within WAIT_S (seconds_until_closed fails otherwise), and not before the 0.5 s limit
    assert min(closed.values()) >= 0.4, closed


def test_connections_past_the_limits_are_closed_at_once_and_others_are_still_answered(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> int:
        listen = {"http_max_connections": 3, "http_max_connections_per_client": 2}
        async with serving(tmp_path, pki, enroller, listen=listen) as harness:
            uploading = await connect(harness, "127.0.0.1")  # in a request: never closed to make room
            uploading[1].write(POST_ROLLOUT % harness.admin_token.encode() + b"[0, ")
            idle = await connect(harness, "127.0.0.1")
            with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
                await connect(harness, "127.0.0.1")  # a third from one address: closed before its handshake
            held = [await connect(harness, "127.0.0.2")]  # three open: the limit overall

            # 127.0.0.1 holds two connections, a newcomer none: it takes the place of the idle one
            assert await fleet(harness, "127.0.0.3") == 200
            await seconds_until_closed(idle[0], time.monotonic())
            idle[1].close()
            held.append(await connect(harness, "127.0.0.3"))  # three open, one from each address
            with pytest.raises(httpx.TransportError):
                await fleet(harness, "127.0.0.4")  # nobody holds two more than it: closed at once
            uploading[1].write(b"1]")
            uploaded = await response_status(uploading[0])
            for _, writer in [uploading, *held]:
                writer.close()
            await eventually(lambda: fleet(harness, "127.0.0.4"))  # closed connections count no more

            for _ in range(4):  # handshakes that fail count no more either
                reader, writer = await connect(harness, "127.0.0.5", tls=False)
                writer.write(b"GET / HTTP/1.1\r\n\r\n")
                await seconds_until_closed(reader, time.monotonic())
                writer.close()
            held = [await connect(harness, "127.0.0.5") for _ in range(2)]
            for _, writer in held:
                writer.close()
            return uploaded

    assert run(scenario) == 400  # the upload was read whole (and found not to be JSON), not closed


async def eventually(request: Callable[[], Awaitable[int]], within: float = 5.0) -> None:
    """Wait until `request` is answered 200 (the server sees a client's close a moment after it is made)."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await request() == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def test_addresses_that_fill_the_limit_with_their_share_cannot_keep_another_address_out() -> None:
    limits = ConnectionLimits(10, 10, 10, max_connections=40, max_per_client=10)
    admission = Admission(limits, None, lambda slot: asyncio.Protocol())
    closed: list[str] = []
    flood = {}
    for n in range(4):  # four addresses at their share: all 40 open, all waiting for headers
        for i in range(10):
            slot = admission.admit(f"10.0.0.{n}")
            assert slot is not None
            slot.waiting(lambda name=f"10.0.0.{n}#{i}": closed.append(name))
            flood[f"10.0.0.{n}#{i}"] = slot
    flood["10.0.0.0#0"].waiting(None)  # this one is busy with a request now

    newcomers = [admission.admit(f"192.0.2.{n}") for n in range(8)]
    assert all(slot is not None for slot in newcomers)
    assert admission.total == 40
    # the longest-waiting of the busiest, in turn
    others = [f"10.0.0.{n}#{i}" for n in (1, 2, 3) for i in (0, 1)]
    assert sorted(closed) == ["10.0.0.0#1", "10.0.0.0#2", *others]
    assert admission.admit("10.0.0.0") is None  # the flood cannot take its places back
    flood["10.0.0.0#1"].release()  # already closed to make room: counted once
    assert admission.total == 40 and admission.by_client["10.0.0.0"] == 8
    for slot in newcomers:
        assert slot is not None
        slot.release()
    assert admission.total == 32 and all(admission.by_client[f"10.0.0.{n}"] == 8 for n in range(4))


def test_connections_count_against_their_ip_address_or_ipv6_64() -> None:
    assert client_of(("192.0.2.7", 443)) == "192.0.2.7"
    assert client_of(("::ffff:192.0.2.7", 443, 0, 0)) == "192.0.2.7"
    assert client_of(("2001:db8:1:2:aaaa::1", 443, 0, 0)) == client_of(("2001:db8:1:2:bbbb::9", 1, 0, 0))
    assert client_of(("2001:db8:1:2::1", 443, 0, 0)) == "2001:db8:1:2::/64"
    assert client_of(("fe80::1%eth0", 443, 0, 2)) == "fe80::/64"
    assert client_of(None) == ""


def test_tls_1_2_is_offered_with_aead_ciphers_only(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    ciphers = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-SHA256")

    async def negotiated(port: int, cipher: str) -> str:
        context = ssl.create_default_context(cafile=str(pki.tls_dir / "ca.pem"))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
        except (ConnectionError, ssl.SSLError):
            return "refused"
        name = str(writer.get_extra_info("cipher")[0])
        writer.close()
        return name

    async def scenario() -> list[str]:
        async with serving(tmp_path, pki, enroller) as harness:
            return [await negotiated(harness.http_port, cipher) for cipher in ciphers]

    assert run(scenario) == [*ciphers[:2], "refused"]


def test_a_request_body_that_stalls_or_comes_too_slowly_without_a_token_closes_its_connection(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    def post(path: str, length: int, token: bytes = b"") -> bytes:
        auth = b"Authorization: Bearer %s\r\n" % token if token else b""
        return (
            b"POST %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), auth, length)
        )

    async def scenario() -> tuple[dict[str, tuple[bytes, float]], int]:
        listen = {**SHORT, "http_body_timeout_seconds": 0.5}
        async with serving(tmp_path, pki, enroller, listen=listen) as harness:
            closed = {}
            for name, request, every in (
                ("sign-in stalls", post("/api/session", 4096) + b'{"token": ', None),
                ("refused body stalls", post("/api/rollouts", 10 << 20) + b'{"model": ', None),
                ("sign-in trickles", post("/api/session", 4096) + b'{"token": ' + b" " * 100, 0.1),
                ("refused body trickles", post("/api/rollouts", 1 << 20) + b" " * 100, 0.1),
            ):
                reader, writer = await connect(harness)
                started = time.monotonic()
                head = len(request) - (100 if every else 0)
                writer.write(request[:head])
                sending = asyncio.create_task(trickle(writer, request[head:], every or 0))
                closed[name] = await answer_until_closed(reader, started)
                await sending
                writer.close()

            # a body that keeps coming takes as long as it takes, past the time of one stall
            reader, writer = await connect(harness)
            writer.write(post("/api/rollouts", 5, harness.admin_token.encode()))
            for byte in b"[0, 1":
                await asyncio.sleep(0.3)
                writer.write(bytes([byte]))
            slow = await response_status(reader)
            writer.close()
            return closed, slow

    closed, slow = run(scenario)
    assert min(seconds for _, seconds in closed.values()) >= 0.4, closed  # closed, not before the limit
    assert closed["sign-in trickles"][0] in (b"", b"HTTP/1.1 408 Request Timeout\r\n"), closed
    assert closed["refused body trickles"][0] in (b"", b"HTTP/1.1 401 Unauthorized\r\n"), closed
    assert slow == 400  # read whole, and found not to be JSON


async def answer_until_closed(reader: asyncio.StreamReader, started: float) -> tuple[bytes, float]:
    """The status line the server answers with, if any, and the seconds from `started` until it closes the
    connection."""
    try:
        status = await asyncio.wait_for(reader.readline(), WAIT_S)
    except (ConnectionError, ssl.SSLError):
        status = b""
    except asyncio.TimeoutError:
        pytest.fail(f"the server kept the connection open over {WAIT_S} s")
    return status, await seconds_until_closed(reader, started)
