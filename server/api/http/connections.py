"""The HTTP API's connections within limits, so that clients that connect and then send little or nothing
cannot take the server's memory and file descriptors (a TLS connection holds ~280 KiB of buffers from the
moment it is accepted):

- at most `max_connections` at once, and `max_per_client` from one address (an IPv6 /64), counted from the
  accepted TCP connection on, TLS handshakes in progress included; one more is closed at once, before its
  handshake, except that when all `max_connections` are open, a client with fewer connections than the
  busiest one takes the place of that one's longest-waiting connection (in its handshake, or waiting for a
  request's headers): a few addresses that hold their share cannot keep all others out;
- the TLS handshake within `handshake_timeout_s`;
- then each request's complete headers within `header_timeout_s` of the handshake or of the previous response
  (a client that sends nothing, or a header a byte at a time, is closed);
- and a request's body, while the server waits for it, never `body_timeout_s` without a byte (a client that
  stalls is closed). A body that keeps coming, and the response, take as long as they take; the routes bound
  the time of the bodies they read without a token (facefleet.server.api.http.problems)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0
"""Least time between two warnings about connections refused past a limit (s)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """handshake_timeout_s, header_timeout_s, body_timeout_s: seconds; max_connections, max_per_client:
    connections open at once."""

    handshake_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_per_client: int


class TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with time limits on the wait for each request's headers and on a body
    that stalls; its admission `slot` is told while it waits for headers, and released when it ends."""

    def __init__(
        self,
        *args: Any,
        header_timeout_s: float,
        body_timeout_s: float,
        slot: Slot,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.slot = slot
        self._headers_due: asyncio.TimerHandle | None = None
        self._body_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _WatchedFlow(transport, self._time_body)
        self._time_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._time_headers()
        self._time_body(progress=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._time_headers()
        self._time_body()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._headers_due, self._body_due):
            if timer is not None:
                timer.cancel()
        self._headers_due = self._body_due = None
        self.slot.release()
        super().connection_lost(exc)

    def _time_headers(self) -> None:
        """Run the timer while no request is in progress (none yet, or its response sent) and stop it once a
        request's headers are in; data that arrives meanwhile does not restart it."""
        waiting = self.conn.our_state in (h11.IDLE, h11.DONE) and not self.transport.is_closing()
        if waiting and self._headers_due is None:
            self._headers_due = self.loop.call_later(self.header_timeout_s, self._headers_late)
            self.slot.waiting(self.transport.abort)
        elif not waiting and self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None
            self.slot.waiting(None)

    def _headers_late(self) -> None:
        self._headers_due = None
        self.slot.waiting(None)
        self.transport.abort()

    def _time_body(self, progress: bool = False) -> None:
        """Run the timer while the client is to send more of a request's body and the server waits for it:
        not while reading is paused (the application has yet to take what came), nor while the client
        waits for a 100 Continue. progress: bytes came, which start the time again."""
        waiting = (
            self.conn.their_state is h11.SEND_BODY
            and not self.flow.read_paused
            and not self.conn.they_are_waiting_for_100_continue
            and not self.transport.is_closing()
        )
        if self._body_due is not None and (progress or not waiting):
            self._body_due.cancel()
            self._body_due = None
        if waiting and self._body_due is None:
            self._body_due = self.loop.call_later(self.body_timeout_s, self._body_stalled)

    def _body_stalled(self) -> None:
        self._body_due = None
        self.transport.abort()


class _WatchedFlow(FlowControl):
    """uvicorn's flow control, which also calls `changed` when reading pauses or resumes."""

    def __init__(self, transport: asyncio.Transport, changed: Callable[[], None]) -> None:
        super().__init__(transport)
        self.changed = changed

    def pause_reading(self) -> None:
        super().pause_reading()
        self.changed()

    def resume_reading(self) -> None:
        super().resume_reading()
        self.changed()


class Slot:
    """One admitted connection of `client`: its place in the counts until release() (once, later calls do
    nothing), and while it waits for bytes (its handshake, a request's headers) how to close it, so that a
    client with fewer connections can take its place."""

    def __init__(self, admission: Admission, client: str) -> None:
        self.admission = admission
        self.client = client
        self.released = False
        self.abort: Callable[[], None] | None = None

    def waiting(self, abort: Callable[[], None] | None) -> None:
        """abort: how to close the connection while it waits (from now on, the longest-waiting of its
        client last in line), or None once it no longer waits."""
        if self.released:
            return
        queue = self.admission.waiting.setdefault(self.client, {})
        queue.pop(self, None)
        self.abort = abort
        if abort is not None:
            queue[self] = None
        elif not queue:
            del self.admission.waiting[self.client]

    def release(self) -> None:
        if self.released:
            return
        self.waiting(None)
        self.released = True
        admission = self.admission
        admission.total -= 1
        left = admission.by_client[self.client] - 1
        if left:
            admission.by_client[self.client] = left
        else:
            del admission.by_client[self.client]


class Admission:
    """Counts the connections overall and by client, closes those past a limit, and does the TLS handshake of
    the others (`tls` None: plaintext) before `http` makes their HTTP protocol, given their Slot. `accepted`
    is the listening server's protocol factory."""

    def __init__(
        self,
        limits: ConnectionLimits,
        tls: ssl.SSLContext | None,
        http: Callable[[Slot], asyncio.Protocol],
    ) -> None:
        self.limits = limits
        self.tls = tls
        self.http = http
        self.total = 0
        self.by_client: dict[str, int] = {}
        self.waiting: dict[str, dict[Slot, None]] = {}
        """Each client's connections waiting for bytes, longest-waiting first."""
        self._handshakes: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._refused = 0
        self._replaced = 0
        self._warned_at = -WARN_EVERY_S

    def accepted(self) -> asyncio.Protocol:
        return _Handshake(self)

    def stop(self) -> None:
        """Close connections accepted from now on and the handshakes in progress."""
        self._stopped = True
        for task in list(self._handshakes):
            task.cancel()

    def admit(self, client: str) -> Slot | None:
        """The connection's slot, or None when it is past a limit. At the overall limit, the busiest
        client's longest-waiting connection is closed to make room, when that client has at least two
        more connections than this one has."""
        limits = self.limits
        if self._stopped or self.by_client.get(client, 0) >= limits.max_per_client:
            self._refuse(client)
            return None
        if self.total >= limits.max_connections and not self._make_room(client):
            self._refuse(client)
            return None
        self.total += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return Slot(self, client)

    def _make_room(self, client: str) -> bool:
        """Close the longest-waiting connection of the busiest client that has one waiting, if it has at
        least two more connections than `client`, so both end with no more than the other."""
        busiest = max(self.waiting, key=self.by_client.__getitem__, default=None)
        if busiest is None or self.by_client[busiest] < self.by_client.get(client, 0) + 2:
            return False
        slot = next(iter(self.waiting[busiest]))
        abort = slot.abort
        slot.release()
        if abort is not None:
            abort()
        self._replaced += 1
        self._warn(client)
        return True

    def _refuse(self, client: str) -> None:
        self._refused += 1
        self._warn(client)

    def _warn(self, client: str) -> None:
        now = time.monotonic()
        if not self._stopped and now - self._warned_at >= WARN_EVERY_S:
            log.warning(
                "HTTP API: new connections closed at once (%d since the last warning), and waiting "
                "connections of the busiest clients closed to let others in (%d): %d open of "
                "listen.http_max_connections = %d, %d from %s of listen.http_max_connections_per_client = %d",
                self._refused,
                self._replaced,
                self.total,
                self.limits.max_connections,
                self.by_client.get(client, 0),
                client or "an unknown address",
                self.limits.max_per_client,
            )
            self._warned_at, self._refused, self._replaced = now, 0, 0

    def start(self, transport: asyncio.Transport, handshake: _Handshake) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(transport, handshake))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, handshake: _Handshake) -> None:
        assert self.tls is not None
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport,
                handshake,
                self.tls,
                server_side=True,
                ssl_handshake_timeout=self.limits.handshake_timeout_s,
            )
        except OSError:  # refused, too slow, or gone; start_tls closed the connection
            handshake.release()
            return
        except BaseException:
            handshake.release()
            raise
        if secured is None or handshake.lost:
            handshake.release()
            return
        handshake.hand_over(secured)


def client_of(peer: Any) -> str:
    """The address a connection counts against: its IP address, or the /64 network of an IPv6 one."""
    try:
        address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except (TypeError, IndexError, ValueError):
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Handshake(asyncio.Protocol):
    """A connection from its acceptance until its TLS handshake is done: admitted or closed at once, then its
    protocol during the handshake (keeping application data that came with the handshake's last message),
    then handed over to the HTTP protocol."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.slot: Slot | None = None
        self.lost = False
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        slot = self.admission.admit(client_of(transport.get_extra_info("peername")))
        if slot is None:
            transport.abort()
            return
        self.slot = slot
        if self.admission.tls is None:
            self.hand_over(transport)
        else:
            transport.pause_reading()
            slot.waiting(transport.abort)
            self.admission.start(transport, self)

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.release()

    def release(self) -> None:
        if self.slot is not None:
            self.slot.release()

    def hand_over(self, transport: asyncio.Transport) -> None:
        assert self.slot is not None
        self.slot.waiting(None)
        http = self.admission.http(self.slot)
        transport.set_protocol(http)
        http.connection_made(transport)
        for data in self._early:
            http.data_received(data)
        self._early.clear()
